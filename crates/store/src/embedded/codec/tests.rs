//! Unit tests of the embedded store's encodings: round trips, and damage that must be an error.

use super::*;

fn put(key: &str, value: &[u8], create: u64, revision: u64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: Revision(create),
        mod_revision: Revision(revision),
    })
}

#[test]
fn events_round_trip() {
    let revision = Revision(12);
    let events = vec![
        put("/weft/leases/n1", b"{\"node-name\":\"n1\"}", 3, 12),
        WatchEvent::Delete {
            key: "/weft/subnets/ipv4/10.42.0.0-24".to_owned(),
            revision,
        },
        put("/weft/empty", b"", 12, 12),
    ];
    let bytes = encode_events(&events);
    assert_eq!(event_count(&bytes), 3);
    assert_eq!(decode_events(revision, &bytes).unwrap(), events);
}

#[test]
fn damaged_events_are_corrupt_not_a_panic() {
    let bytes = encode_events(&[put("/weft/k", b"value", 1, 1)]);
    for cut in 0..bytes.len() {
        let err = decode_events(Revision(1), &bytes[..cut]).unwrap_err();
        assert!(err.to_string().contains("event log revision 1"), "{err}");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(decode_events(Revision(1), &extra).is_err());
    let mut bad_tag = bytes;
    bad_tag[4] = 7;
    assert!(decode_events(Revision(1), &bad_tag).is_err());
    assert_eq!(event_count(&[1, 0]), 0);
}

#[test]
fn entries_round_trip() {
    let bytes = Entry::encode(Revision(2), Revision(9), b"hello");
    let entry = Entry::decode("/weft/k", &bytes).unwrap();
    assert_eq!(
        entry,
        Entry {
            create_revision: Revision(2),
            mod_revision: Revision(9),
            value: b"hello".to_vec(),
        }
    );
    let err = Entry::decode("/weft/k", &bytes[..10]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "corrupt embedded store entry at key /weft/k: 10 bytes is shorter than its 16-byte header; delete the key or the node it belongs to"
    );
}
