//! Tests of what a neighbour notification means for weft's entries: only permanent ones are
//! weft's, so a notification that an entry is no longer permanent says weft's is gone.

use std::net::IpAddr;

use weft_fabric::{Change, MacAddr};

use super::entry_change;
use crate::observe::Entry;

#[test]
fn only_permanent_entries_that_are_there_are_weft_s() {
    let ip: IpAddr = "10.42.1.0".parse().unwrap();
    let dst: IpAddr = "192.0.2.2".parse().unwrap();
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let dev = || "flannel.1".to_owned();
    let neighbour = |permanent| Entry::Neighbour {
        dev: dev(),
        ip,
        mac,
        permanent,
    };
    let fdb = |permanent| Entry::Fdb {
        dev: dev(),
        mac,
        dst,
        permanent,
    };
    let neighbour_now = |mac| Change::Neighbour {
        dev: dev(),
        ip,
        mac,
    };
    let fdb_now = |present| Change::Fdb {
        dev: dev(),
        mac,
        dst,
        present,
    };
    // Cases: (the entry, whether the notification says it is there, the change to record).
    let cases = [
        (neighbour(true), true, neighbour_now(Some(mac))),
        (neighbour(false), true, neighbour_now(None)),
        (neighbour(true), false, neighbour_now(None)),
        (fdb(true), true, fdb_now(true)),
        (fdb(false), true, fdb_now(false)),
        (fdb(true), false, fdb_now(false)),
    ];
    for (entry, present, want) in cases {
        assert_eq!(
            entry_change(entry.clone(), present),
            want,
            "{entry:?} {present}"
        );
    }
}
