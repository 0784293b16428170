//! The UAPI side of the userspace device without a TUN: `set=1` bodies applied to a state,
//! and the `get=1` text read back by defguard's parser.

use std::sync::Arc;

use defguard_wireguard_rs::host::Host;
use defguard_wireguard_rs::key::Key;

use super::{State, apply_set, hex, uapi_text};

fn hex_of(seed: u8) -> String {
    hex(&[seed; 32])
}

/// The device's key and one peer, as `start` and weft's peer updates write them.
fn configured(next_index: &mut u32) -> State {
    let body = format!(
        "private_key={}\nlisten_port=51820\npublic_key={}\nendpoint=192.0.2.2:51820\n\
         persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.42.2.0/24\n\
         allowed_ip=fd00:2::/64\npreshared_key={}\n",
        hex_of(1),
        hex_of(2),
        hex_of(9)
    );
    let (state, port) = apply_set(&State::default(), &body, next_index).unwrap_or_default();
    assert_eq!(port, Some(51820));
    state
}

#[test]
fn a_set_reads_back_through_get() {
    let state = configured(&mut 7);
    let host = Host::parse_uapi(uapi_text(&state, 51820).as_bytes());
    let Ok(host) = host else {
        panic!("get=1 text does not parse: {host:?}");
    };
    assert_eq!(host.listen_port, 51820);
    let peer = host.peers.get(&Key::new([2; 32]));
    let Some(peer) = peer else {
        panic!(
            "the peer is missing: {:?}",
            host.peers.keys().collect::<Vec<_>>()
        );
    };
    assert_eq!(peer.endpoint, "192.0.2.2:51820".parse().ok());
    assert_eq!(peer.persistent_keepalive_interval, Some(25));
    assert_eq!(peer.preshared_key, Some(Key::new([9; 32])));
    let ips: Vec<String> = peer.allowed_ips.iter().map(|m| m.to_string()).collect();
    assert_eq!(ips, ["10.42.2.0/24", "fd00:2::/64"]);
}

#[test]
fn a_changed_endpoint_keeps_the_session_and_a_changed_psk_does_not() {
    let mut next = 7;
    let state = configured(&mut next);
    let before = Arc::clone(&state.peers[0].tunnel);
    let moved = format!("public_key={}\nendpoint=192.0.2.3:51820\n", hex_of(2));
    let (state, _) = apply_set(&state, &moved, &mut next).unwrap_or_default();
    assert!(Arc::ptr_eq(&before, &state.peers[0].tunnel), "same session");
    assert_eq!(state.peers[0].endpoint(), "192.0.2.3:51820".parse().ok());
    assert_eq!(state.peers[0].allowed_ips.len(), 2, "allowed IPs kept");

    let rekeyed = format!("public_key={}\npreshared_key={}\n", hex_of(2), hex_of(8));
    let (state, _) = apply_set(&state, &rekeyed, &mut next).unwrap_or_default();
    assert!(!Arc::ptr_eq(&before, &state.peers[0].tunnel), "new session");
    assert_ne!(state.peers[0].index, 7, "a new session index");
    assert_eq!(state.peers[0].endpoint(), "192.0.2.3:51820".parse().ok());
}

#[test]
fn removal_and_bad_lines() {
    let mut next = 1;
    let state = configured(&mut next);
    let removed = format!("public_key={}\nremove=true\n", hex_of(2));
    let (after, _) = apply_set(&state, &removed, &mut next).unwrap_or_default();
    assert!(after.peers.is_empty());

    // (body, what the error says) — a refused value is never echoed: it may be a key.
    let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddee";
    let cases = [
        (
            format!("private_key={secret}\n"),
            "the UAPI field `private_key` is not a 64-digit hex key",
        ),
        (
            format!("public_key={}\nallowed_ip=10.42.2.0/33\n", hex_of(2)),
            "the UAPI field `allowed_ip` is not an address/prefix",
        ),
        (
            "listen_port=99999\n".to_owned(),
            "the UAPI field `listen_port` is not a port",
        ),
        (
            format!("endpoint=192.0.2.2:1\npublic_key={}\n", hex_of(2)),
            "the UAPI field `endpoint` is not one this device takes here",
        ),
        (format!("{secret}\n"), "a UAPI line has no `=`"),
    ];
    for (body, expected) in cases {
        let result = apply_set(&state, &body, &mut next).map(|_| ());
        assert_eq!(result, Err(expected.to_owned()), "{body}");
        assert!(!expected.contains(secret));
    }
    let fresh = format!("public_key={}\n", hex_of(2));
    assert_eq!(
        apply_set(&State::default(), &fresh, &mut next).map(|_| ()),
        Err("a peer needs the device's private_key first".to_owned())
    );
}
