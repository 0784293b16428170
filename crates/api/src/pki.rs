//! The cluster CA and the certificates it issues: the server's serving certificate, each node's
//! client certificate (`system:node:<name>`), the admin's (`system:admin`: node management) and
//! the kube-apiserver's (`system:apiserver`: the HTTP CONNECT front door and nothing else), the
//! last two in `system:masters` as K3s gives them.
//!
//! Lifetimes are K3s's: the CA is valid for [`CA_VALIDITY`] (10 years) and everything it issues
//! for [`LEAF_VALIDITY`] (365 days), each from [`CLOCK_SKEW`] before it was made, so a host whose
//! clock is a little behind accepts it too. A certificate with less than [`RENEW_BEFORE`] left
//! is renewed: an agent renews its node certificate, a server its own files when it starts.
//! [`CertificateInfo`] reads back what a certificate says about itself, for those checks and
//! for `weft-server certificate check` ([`CertificateCheck`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::ApiError;

#[cfg(test)]
mod tests;

/// The organization of node client certificates (Kubernetes' node group).
pub const NODE_ORGANIZATION: &str = "system:nodes";
/// The common-name prefix of node client certificates.
pub const NODE_CN_PREFIX: &str = "system:node:";
/// The organization of the admin and kube-apiserver client certificates (Kubernetes'
/// privileged group, as K3s gives both).
pub const MASTERS_ORGANIZATION: &str = "system:masters";
/// The common name of the admin client certificate (K3s's `client-admin.crt`).
pub const ADMIN_COMMON_NAME: &str = "system:admin";
/// The common name of the kube-apiserver's egress client certificate (K3s's
/// `client-kube-apiserver.crt`).
pub const KUBE_APISERVER_COMMON_NAME: &str = "system:apiserver";

/// How long the CA is valid (K3s's 10 years).
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * SECONDS_A_DAY);
/// How long every certificate the CA issues is valid (K3s's 365 days).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * SECONDS_A_DAY);
/// How long before it was made a certificate is already valid, for clocks a little behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// A certificate with less than this left is renewed (K3s's 90 days).
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * SECONDS_A_DAY);

const SECONDS_A_DAY: u64 = 86_400;

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
    /// When the certificates it issues expire, when not [`LEAF_VALIDITY`] after they are made:
    /// set only by tests, through `with_leaf_expiry`.
    leaf_expiry: Option<SystemTime>,
}

/// Who a verified client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A node: `CN=system:node:<name>, O=system:nodes`.
    Node(String),
    /// The admin: `CN=system:admin, O=system:masters`; manages nodes.
    Admin,
    /// The kube-apiserver's egress client: `CN=system:apiserver, O=system:masters`; opens HTTP
    /// CONNECT tunnels and nothing else.
    KubeApiserver,
    /// A certificate of this CA with another subject (its common name).
    Other(String),
}

/// The names and addresses a serving certificate is valid for: the ones asked for, plus
/// `localhost` and both loopback addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingNames {
    /// DNS names.
    pub dns: BTreeSet<String>,
    /// IP addresses.
    pub ips: BTreeSet<IpAddr>,
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject, e.g. `CN=system:admin, O=system:masters`.
    pub subject: String,
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations.
    pub organizations: Vec<String>,
    /// What it may be used for, in K3s's words: `CertSign`, `ServerAuth`, `ClientAuth`.
    pub usages: Vec<&'static str>,
    /// The names and addresses it is valid for (empty for a client certificate).
    pub names: ServingNames,
    /// When it becomes valid.
    pub not_before: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

/// Where a certificate stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Valid, with at least [`RENEW_BEFORE`] left.
    Ok,
    /// Valid, with less than [`RENEW_BEFORE`] left: it is renewed soon.
    Expiring,
    /// Past its end.
    Expired,
    /// Before its start (a clock behind, or a certificate from the future).
    NotYetValid,
}

/// One line of `weft-server certificate check`: a certificate, the file it is in and where it
/// stands, in K3s's words (`<file>: certificate <subject> (<usages>) is ok, expires at <RFC
/// 3339 time>`), with the days left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateCheck {
    /// The file, as the user should find it (relative to the data dir).
    pub file: String,
    /// The certificate.
    pub info: CertificateInfo,
    /// Where it stands.
    pub expiry: Expiry,
    /// Whole days left (negative once expired).
    pub days_left: i64,
}

// === impl ClusterCa ===

impl ClusterCa {
    /// A new CA with a fresh ECDSA P-256 key, valid for [`CA_VALIDITY`].
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
        let now = SystemTime::now();
        params.not_before = valid_from(now).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params.self_signed(&key).map_err(pki_error)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key,
            leaf_expiry: None,
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
            leaf_expiry: None,
        })
    }

    /// Every certificate this CA issues from now on expires at `not_after`, instead of
    /// [`LEAF_VALIDITY`] after it is made: for tests that need a certificate near or past its
    /// end.
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_leaf_expiry(mut self, not_after: SystemTime) -> ClusterCa {
        self.leaf_expiry = Some(not_after);
        self
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
        let wanted = ServingNames::new(names, ips);
        let mut params = CertificateParams::default();
        params.distinguished_name = name("weft-server", None);
        let mut sans = Vec::new();
        for n in wanted.dns {
            sans.push(SanType::DnsName(n.try_into().map_err(pki_error)?));
        }
        sans.extend(wanted.ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for node `node_name` (`CN=system:node:<name>, O=system:nodes`).
    pub fn issue_node(&self, node_name: &str) -> Result<CertifiedKey, ApiError> {
        self.issue_client(&format!("{NODE_CN_PREFIX}{node_name}"), NODE_ORGANIZATION)
    }

    /// The admin client certificate (`CN=system:admin, O=system:masters`): node management.
    pub fn issue_admin(&self) -> Result<CertifiedKey, ApiError> {
        self.issue_client(ADMIN_COMMON_NAME, MASTERS_ORGANIZATION)
    }

    /// The kube-apiserver's egress client certificate (`CN=system:apiserver,
    /// O=system:masters`): HTTP CONNECT through the front door, and nothing else.
    pub fn issue_kube_apiserver(&self) -> Result<CertifiedKey, ApiError> {
        self.issue_client(KUBE_APISERVER_COMMON_NAME, MASTERS_ORGANIZATION)
    }

    /// What `pair` holds, if it is good to keep at `now`: this CA signed it, the key is the
    /// certificate's, it is valid with at least [`RENEW_BEFORE`] left, and it ends no later than
    /// one issued now would (one from before certificates had lifetimes is replaced). The
    /// caller checks that its subject or names are still the ones it wants.
    pub fn reusable(&self, pair: &CertifiedKey, now: SystemTime) -> Option<CertificateInfo> {
        let der = first_der(&pair.cert_pem).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        let ca_der = first_der(&self.cert_pem).ok()?;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).ok()?;
        if cert.issuer().as_raw() != ca.subject().as_raw()
            || cert.verify_signature(Some(ca.public_key())).is_err()
        {
            return None;
        }
        let key = KeyPair::from_pem(&pair.key_pem).ok()?;
        if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
            return None;
        }
        let info = CertificateInfo::of(&cert);
        let longest = now + LEAF_VALIDITY + CLOCK_SKEW;
        (info.expiry(now) == Expiry::Ok && info.not_after <= longest).then_some(info)
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
        let now = SystemTime::now();
        params.not_before = valid_from(now).into();
        params.not_after = self.leaf_expiry.unwrap_or(now + LEAF_VALIDITY).into();
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

// === impl ServingNames ===

impl ServingNames {
    /// `names` and `ips`, plus `localhost`, `127.0.0.1` and `::1`.
    pub fn new(names: &[String], ips: &[IpAddr]) -> ServingNames {
        let mut dns: BTreeSet<String> = names.iter().cloned().collect();
        dns.insert("localhost".to_owned());
        let mut ips: BTreeSet<IpAddr> = ips.iter().copied().collect();
        ips.insert(IpAddr::from([127, 0, 0, 1]));
        ips.insert(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        ServingNames { dns, ips }
    }
}

// === impl CertificateInfo ===

impl CertificateInfo {
    /// Where the certificate stands at `now`.
    pub fn expiry(&self, now: SystemTime) -> Expiry {
        if now < self.not_before {
            Expiry::NotYetValid
        } else if now >= self.not_after {
            Expiry::Expired
        } else if self.not_after < now + RENEW_BEFORE {
            Expiry::Expiring
        } else {
            Expiry::Ok
        }
    }

    /// Whose certificate it is, by its subject.
    pub fn identity(&self) -> ClientIdentity {
        identity_of(&self.common_name, &self.organizations)
    }

    fn of(cert: &X509Certificate<'_>) -> CertificateInfo {
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let organizations = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_owned)
            .collect();
        let mut usages = Vec::new();
        if cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|k| k.value.key_cert_sign())
        {
            usages.push("CertSign");
        }
        if let Ok(Some(extended)) = cert.extended_key_usage() {
            if extended.value.server_auth {
                usages.push("ServerAuth");
            }
            if extended.value.client_auth {
                usages.push("ClientAuth");
            }
        }
        let mut names = ServingNames::default();
        if let Ok(Some(sans)) = cert.subject_alternative_name() {
            for san in &sans.value.general_names {
                match san {
                    GeneralName::DNSName(n) => {
                        names.dns.insert((*n).to_owned());
                    }
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_of(bytes) {
                            names.ips.insert(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        CertificateInfo {
            subject: subject.to_string(),
            common_name,
            organizations,
            usages,
            names,
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
        }
    }
}

// === impl CertificateCheck ===

impl CertificateCheck {
    /// `info`, found in `file`, as it stands at `now`.
    pub fn new(file: String, info: CertificateInfo, now: SystemTime) -> CertificateCheck {
        let expiry = info.expiry(now);
        let days_left = match info.not_after.duration_since(now) {
            Ok(left) => (left.as_secs() / SECONDS_A_DAY) as i64,
            Err(past) => -((past.duration().as_secs() / SECONDS_A_DAY) as i64),
        };
        CertificateCheck {
            file,
            info,
            expiry,
            days_left,
        }
    }

    /// Whether the certificate is unusable now (expired, or not yet valid).
    pub fn failed(&self) -> bool {
        matches!(self.expiry, Expiry::Expired | Expiry::NotYetValid)
    }
}

impl std::fmt::Display for CertificateCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = &self.info;
        write!(
            f,
            "{}: certificate {} ({}) ",
            self.file,
            info.subject,
            info.usages.join(",")
        )?;
        let end = rfc3339(info.not_after);
        match self.expiry {
            Expiry::Ok => write!(f, "is ok, expires at {end}")?,
            Expiry::Expiring => write!(
                f,
                "will expire within {} days at {end}",
                RENEW_BEFORE.as_secs() / SECONDS_A_DAY
            )?,
            Expiry::Expired => write!(f, "expired at {end}")?,
            Expiry::NotYetValid => {
                write!(f, "is not valid before {}", rfc3339(info.not_before))?;
            }
        }
        match self.days_left {
            1 => write!(f, " (1 day left)"),
            n if n >= 0 => write!(f, " ({n} days left)"),
            -1 => write!(f, " (1 day ago)"),
            n => write!(f, " ({} days ago)", -n),
        }
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
    Ok(cert_fingerprint(&first_der(cert_pem)?))
}

/// What every certificate of a PEM bundle says about itself.
pub fn certificates_info(pem: &str) -> Result<Vec<CertificateInfo>, ApiError> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::pki("reading the certificate PEM", e))?;
    if ders.is_empty() {
        return Err(ApiError::Pki {
            what: "the PEM holds no certificate".into(),
            source: None,
        });
    }
    ders.iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| ApiError::pki("the certificate does not parse", e))?;
            Ok(CertificateInfo::of(&cert))
        })
        .collect()
}

/// What the first certificate of a PEM bundle says about itself.
pub fn certificate_info(pem: &str) -> Result<CertificateInfo, ApiError> {
    let der = first_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| ApiError::pki("the certificate does not parse", e))?;
    Ok(CertificateInfo::of(&cert))
}

/// Who a client certificate (DER, already verified against the CA by TLS) belongs to.
pub fn client_identity(cert_der: &[u8]) -> Result<ClientIdentity, ApiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| ApiError::pki("the client certificate does not parse", e))?;
    Ok(CertificateInfo::of(&cert).identity())
}

/// `t` as RFC 3339 in UTC, to the second (`2026-09-08T08:45:21Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn identity_of(common_name: &str, organizations: &[String]) -> ClientIdentity {
    let in_org = |org: &str| organizations.iter().any(|o| o == org);
    match common_name {
        ADMIN_COMMON_NAME if in_org(MASTERS_ORGANIZATION) => ClientIdentity::Admin,
        KUBE_APISERVER_COMMON_NAME if in_org(MASTERS_ORGANIZATION) => ClientIdentity::KubeApiserver,
        cn => match cn.strip_prefix(NODE_CN_PREFIX) {
            Some(node) if in_org(NODE_ORGANIZATION) => ClientIdentity::Node(node.to_owned()),
            _ => ClientIdentity::Other(cn.to_owned()),
        },
    }
}

fn first_der(pem: &str) -> Result<CertificateDer<'static>, ApiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ApiError::pki("reading the certificate PEM", e))
}

/// The instant a certificate made at `now` becomes valid: [`CLOCK_SKEW`] earlier.
fn valid_from(now: SystemTime) -> SystemTime {
    now.checked_sub(CLOCK_SKEW).unwrap_or(now)
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let offset = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    }
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
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
    ApiError::pki("making a certificate or key", e)
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"********")
            .finish()
    }
}
