//! Tests of the pair harness itself, and proptests of the protocol through it.

use crate::pair::Pair;

#[test]
fn a_default_pair_is_idle() {
    let mut pair = Pair::default();
    assert!(pair.drive_bounded(10));
    assert_eq!(pair.server.in_flight() + pair.agent.in_flight(), 0);
}
