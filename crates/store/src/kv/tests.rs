//! Unit tests of the key-value types: transaction checks, comparisons, batching.

use super::*;

fn put(key: &str, revision: u64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.to_owned(),
        value: b"v".to_vec(),
        create_revision: Revision(1),
        mod_revision: Revision(revision),
    })
}

#[test]
fn a_transaction_changes_each_key_once() {
    let ok = Txn::new().put("/weft/a", "1").delete("/weft/b");
    assert!(ok.check().is_ok());
    let twice = Txn::new()
        .put("/weft/a", "1")
        .put("/weft/b", "2")
        .delete("/weft/a");
    match twice.check() {
        Err(StoreError::DuplicateKey { key }) => assert_eq!(key, "/weft/a"),
        other => panic!("expected a duplicate key error, got {other:?}"),
    }
    // Comparing a key twice is fine.
    let compares = Txn::new()
        .when(Compare::absent("/weft/a"))
        .when(Compare::mod_revision("/weft/a", Revision::ZERO))
        .put("/weft/a", "1");
    assert!(compares.check().is_ok());
}

#[test]
fn comparisons_follow_etcd() {
    let check = |compare: Compare, current: Option<u64>, expect: bool| {
        assert_eq!(
            compare.holds(current.map(Revision)),
            expect,
            "{compare:?} on {current:?}"
        );
    };
    check(Compare::absent("k"), None, true);
    check(Compare::absent("k"), Some(3), false);
    check(Compare::mod_revision("k", Revision(3)), Some(3), true);
    check(Compare::mod_revision("k", Revision(3)), Some(4), false);
    check(Compare::mod_revision("k", Revision(3)), None, false);
    // Revision 0 is "absent", as etcd compares a missing key's revisions as 0.
    check(Compare::mod_revision("k", Revision::ZERO), None, true);
    check(Compare::mod_revision("k", Revision::ZERO), Some(1), false);
}

#[test]
fn events_group_into_one_batch_per_revision() {
    let grouped = batches([
        put("/a", 2),
        put("/b", 2),
        WatchEvent::Delete {
            key: "/c".to_owned(),
            revision: Revision(3),
        },
        put("/a", 5),
    ]);
    let shape: Vec<(u64, usize)> = grouped
        .iter()
        .map(|b| (b.revision.get(), b.events.len()))
        .collect();
    assert_eq!(shape, [(2, 2), (3, 1), (5, 1)]);
    assert!(batches([]).is_empty());
}

#[test]
fn revisions_count_up() {
    assert_eq!(Revision::ZERO.next(), Revision(1));
    assert_eq!(Revision(41).next().get(), 42);
    assert_eq!(Revision(7).to_string(), "7");
    assert_eq!(serde_json::to_string(&Revision(9)).unwrap(), "9");
}
