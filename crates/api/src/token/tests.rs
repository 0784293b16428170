//! Tests of token parsing and password hashing.

use super::*;

const HASH: &str = "b3d0c6f5a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7";

#[test]
fn parses_secure_and_bare_tokens() {
    let t = JoinToken::parse(&format!("K10{HASH}::server:s3cret")).unwrap();
    assert_eq!(t.ca_hash.as_deref(), Some(HASH));
    assert_eq!((t.user.as_str(), t.secret.as_str()), ("server", "s3cret"));
    assert_eq!(t.to_string(), format!("K10{HASH}::server:s3cret"));
    // A secret may itself hold colons.
    assert_eq!(
        JoinToken::parse(&format!("K10{HASH}::node:a:b"))
            .unwrap()
            .secret,
        "a:b"
    );
    let bare = JoinToken::parse(" plain-secret\n").unwrap();
    assert_eq!((bare.ca_hash, bare.secret.as_str()), (None, "plain-secret"));
    assert!(!format!("{t:?}").contains("s3cret"));
}

#[test]
fn token_errors() {
    let err = |s: &str| JoinToken::parse(s).unwrap_err().to_string();
    assert_eq!(
        err(""),
        "invalid token: it is empty; use the token from the server's <data-dir>/server/token"
    );
    assert_eq!(
        err("K10abc::server:x"),
        "invalid token: the CA hash after K10 must be 64 hex characters; use the token from the server's <data-dir>/server/token"
    );
    assert_eq!(
        err(&format!("K10{HASH}server:x")),
        "invalid token: a K10 token must read K10<ca-hash>::<user>:<secret>; use the token from the server's <data-dir>/server/token"
    );
    assert!(JoinToken::parse(&format!("K10{HASH}::server:")).is_err());
}

#[test]
fn node_passwords() {
    let h = hash_node_password("pw");
    assert!(h.starts_with("sha256:"));
    assert!(verify_node_password(&h, "pw"));
    assert!(!verify_node_password(&h, "pw2"));
    assert_ne!(h, hash_node_password("pw"));
    assert!(!verify_node_password("garbage", "pw"));
    assert_eq!(random_secret().len(), 64);
    assert!(secrets_equal("a", "a") && !secrets_equal("a", "b"));
}
