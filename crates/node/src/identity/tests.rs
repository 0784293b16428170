//! Tests of the node identity files: made once, kept, private where they hold secrets.

use std::os::unix::fs::PermissionsExt as _;

use crate::NodeError;
use crate::identity::NodeIdentity;

#[test]
fn wireguard_key_is_made_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeIdentity::load_or_create(dir.path()).unwrap();
    let path = dir.path().join("wireguard-key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 44, "{text}");
    let again = NodeIdentity::load_or_create(dir.path()).unwrap();
    assert_eq!(again.wireguard_key, first.wireguard_key);
    assert_eq!(
        again.wireguard_key.public_key(),
        first.wireguard_key.public_key()
    );
    // The key never shows in a debug print.
    let debug = format!("{first:?}");
    assert!(!debug.contains(text.trim()), "{debug}");
    assert!(
        debug.contains(&first.wireguard_key.public_key().to_string()),
        "{debug}"
    );
}

#[test]
fn a_damaged_key_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wireguard-key"), "not a key\n").unwrap();
    let err = NodeIdentity::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&err, NodeError::Corrupt { path, .. } if path.ends_with("wireguard-key")),
        "{err}"
    );
}
