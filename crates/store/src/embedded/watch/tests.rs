//! Unit tests of the embedded watch's prefix filter.

use super::*;
use crate::KeyValue;

fn put(key: &str) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.to_owned(),
        value: Vec::new(),
        create_revision: Revision(4),
        mod_revision: Revision(4),
    })
}

#[test]
fn filter_keeps_the_prefix() {
    let batch = WatchBatch {
        revision: Revision(4),
        events: vec![put("/weft/a/1"), put("/weft/b/1")],
    };
    let kept = filter(&batch, "/weft/a/").unwrap();
    assert_eq!(kept.events.len(), 1);
    assert_eq!(kept.revision, Revision(4));
    assert_eq!(filter(&batch, "/weft/c/"), None);
    assert_eq!(filter(&batch, "/weft/").unwrap().events.len(), 2);
}
