//! Tests of the cluster CA.

use super::*;

#[test]
fn issues_certificates_with_identities() {
    let ca = ClusterCa::generate().unwrap();
    let again = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.hash(), ca.hash());
    assert_eq!(ca.hash().len(), 64);
    let node = again.issue_node("node-a").unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(node.cert_pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c)
        .unwrap();
    assert_eq!(
        client_identity(&der).unwrap(),
        ClientIdentity::Node("node-a".into())
    );
    let egress = ca.issue_egress().unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(egress.cert_pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c)
        .unwrap();
    assert_eq!(client_identity(&der).unwrap(), ClientIdentity::Egress);
    let server = ca
        .issue_server(&["weft.example".into()], &["192.0.2.1".parse().unwrap()])
        .unwrap();
    assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!format!("{server:?}").contains("PRIVATE"));
}

#[test]
fn damaged_ca_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    assert!(ClusterCa::from_pem("not a cert", &ca.key_pem()).is_err());
    assert!(ClusterCa::from_pem(ca.cert_pem(), "not a key").is_err());
}
