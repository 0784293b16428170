//! Tests of weft's TLS settings.

use super::*;

#[test]
fn aes_128_gcm_is_preferred_in_each_tls_version() {
    let suites: Vec<_> = provider()
        .cipher_suites
        .iter()
        .map(|suite| suite.suite())
        .collect();
    let position = |suite| suites.iter().position(|s| *s == suite).expect("offered");
    use rustls::CipherSuite::*;
    assert_eq!(suites[0], TLS13_AES_128_GCM_SHA256);
    assert!(position(TLS13_AES_128_GCM_SHA256) < position(TLS13_AES_256_GCM_SHA384));
    assert!(
        position(TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
            < position(TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    // Nothing was dropped.
    assert_eq!(
        suites.len(),
        rustls::crypto::ring::default_provider().cipher_suites.len()
    );
}
