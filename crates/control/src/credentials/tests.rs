//! Which certificates a node's channel admits.

use super::Held;

#[test]
fn a_channel_admits_only_the_current_certificate() {
    let current = Held::Certificate(Some("aa".to_owned()));
    assert!(current.admits("aa"));
    assert!(!current.admits("bb"));
    // A record from before fingerprints takes any certificate of the node's name.
    assert!(Held::Certificate(None).admits("bb"));
    assert!(!Held::Gone.admits("aa"));
}
