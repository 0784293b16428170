//! Unit tests of the typed layer's pure parts: picking CIDRs, reading the index, typing
//! watch batches, and the datastore flags.

use std::path::PathBuf;

use weft_fabric::BackendData;

use super::*;
use crate::WatchBatch;

fn allocator(cluster: &str) -> DualStackAllocator {
    let cluster = CidrList::parse("cluster-cidr", &[cluster]).unwrap();
    DualStackAllocator::new(&cluster, 24, 64).unwrap()
}

#[test]
fn first_attempts_take_the_next_cidr_and_retries_spread_out() {
    assert_eq!(spread(0), 1);
    assert_eq!(spread(1), 8);
    assert_eq!(spread(100), 64);

    let mut a = allocator("10.42.0.0/16");
    let first = pick(&mut a, 0).unwrap();
    assert_eq!(first.ipv4.unwrap().to_string(), "10.42.0.0/24");
    assert_eq!(a.ipv4().unwrap().allocated(), 1);

    // A retry picks among the next few and gives the others back.
    let retry = pick(&mut a, 1).unwrap();
    let third = retry.ipv4.unwrap().network().octets()[2];
    assert!((1..=8).contains(&third), "{retry:?}");
    assert_eq!(a.ipv4().unwrap().allocated(), 2);
}

#[test]
fn picking_from_a_nearly_full_cluster() {
    let mut a = allocator("10.42.0.0/23");
    pick(&mut a, 0).unwrap();
    // Fewer free CIDRs than the spread: the only one is taken.
    let last = pick(&mut a, 5).unwrap();
    assert_eq!(last.ipv4.unwrap().to_string(), "10.42.1.0/24");
    assert!(matches!(pick(&mut a, 0), Err(IpamError::Exhausted { .. })));
    assert!(matches!(pick(&mut a, 3), Err(IpamError::Exhausted { .. })));
}

#[test]
fn index_keys_fill_the_allocator() {
    let mut a = allocator("10.42.0.0/16,fd00:42::/56");
    occupy(&mut a, "/weft/subnets/ipv4/10.42.0.0-24").unwrap();
    occupy(&mut a, "/weft/subnets/ipv6/fd00:42::-64").unwrap();
    // Outside the cluster CIDR: can't collide, skipped.
    occupy(&mut a, "/weft/subnets/ipv4/10.99.0.0-24").unwrap();
    assert_eq!(a.ipv4().unwrap().allocated(), 1);
    assert_eq!(a.ipv6().unwrap().allocated(), 1);
    let next = a.allocate().unwrap();
    assert_eq!(next.ipv4.unwrap().to_string(), "10.42.1.0/24");

    // Inside but of another size: it overlaps, so it is an error naming the key.
    let err = occupy(&mut a, "/weft/subnets/ipv4/10.42.8.0-23").unwrap_err();
    assert!(matches!(err, StoreError::SubnetDoesNotFit { .. }), "{err}");
    assert!(
        err.to_string().contains("/weft/subnets/ipv4/10.42.8.0-23"),
        "{err}"
    );
    assert!(matches!(
        occupy(&mut a, "/weft/subnets/ipv4/garbage"),
        Err(StoreError::Corrupt { .. })
    ));

    // A family the cluster does not use is skipped too.
    let mut v4 = allocator("10.42.0.0/16");
    occupy(&mut v4, "/weft/subnets/ipv6/fd00:42::-64").unwrap();
}

#[test]
fn typed_batches_report_corrupt_records_and_go_on() {
    let good = Lease {
        node_name: "n1".to_owned(),
        ipv4_cidr: None,
        ipv6_cidr: None,
        public_ipv4: None,
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    };
    let put = |key: &str, value: Vec<u8>| {
        WatchEvent::Put(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: Revision(3),
            mod_revision: Revision(3),
        })
    };
    let batch = WatchBatch {
        revision: Revision(3),
        events: vec![
            put("/weft/leases/n1", serde_json::to_vec(&good).unwrap()),
            put("/weft/leases/n2", b"{".to_vec()),
            WatchEvent::Delete {
                key: "/weft/leases/n3".to_owned(),
                revision: Revision(3),
            },
        ],
    };
    let items = typed_items::<Lease>(Ok(batch));
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[0], Err(StoreError::Corrupt { key, .. }) if key == "/weft/leases/n2"));
    let Ok(typed) = &items[1] else {
        panic!("the batch follows the error")
    };
    assert_eq!(typed.revision, Revision(3));
    assert_eq!(
        typed.events,
        vec![
            Event::Put {
                name: "n1".to_owned(),
                value: Lease {
                    created_revision: 3,
                    ..good
                },
                revision: Revision(3)
            },
            Event::Delete {
                name: "n3".to_owned(),
                revision: Revision(3)
            },
        ]
    );
    let compacted = typed_items::<Lease>(Err(StoreError::Compacted {
        oldest: Revision(9),
    }));
    assert!(matches!(
        &compacted[..],
        [Err(StoreError::Compacted { .. })]
    ));
}

#[test]
fn datastore_from_flags() {
    let dir = PathBuf::from("/var/lib/weft");
    let none = EtcdTlsFiles::default;
    let embedded = Datastore::Embedded {
        data_dir: dir.clone(),
    };
    assert_eq!(Datastore::from_flags(&dir, None, none()).unwrap(), embedded);
    assert_eq!(
        Datastore::from_flags(&dir, Some(" "), none()).unwrap(),
        embedded
    );
    assert_eq!(
        Datastore::from_flags(
            &dir,
            Some("http://10.0.0.1:2379,http://10.0.0.2:2379"),
            none()
        )
        .unwrap(),
        Datastore::Etcd {
            endpoints: vec![
                "http://10.0.0.1:2379".to_owned(),
                "http://10.0.0.2:2379".to_owned()
            ],
            tls: none(),
        }
    );
    assert!(matches!(
        Datastore::from_flags(&dir, Some("mysql://db"), none()),
        Err(StoreError::InvalidEndpoint { .. })
    ));
}

#[test]
fn datastore_tls_files_need_https() {
    let dir = PathBuf::from("/var/lib/weft");
    let tls = EtcdTlsFiles {
        ca_file: Some("/etc/etcd/ca.crt".into()),
        client: Some(crate::ClientCertFiles {
            cert_file: "/etc/etcd/client.crt".into(),
            key_file: "/etc/etcd/client.key".into(),
        }),
    };
    assert_eq!(
        Datastore::from_flags(&dir, Some("https://10.0.0.1:2379"), tls.clone()).unwrap(),
        Datastore::Etcd {
            endpoints: vec!["https://10.0.0.1:2379".to_owned()],
            tls: tls.clone(),
        }
    );
    let flags = "--datastore-cafile, --datastore-certfile, --datastore-keyfile apply only to an https:// etcd endpoint";
    for (endpoint, store) in [
        (
            None,
            "--datastore-endpoint is not set, so the store is the embedded one",
        ),
        (
            Some("http://10.0.0.1:2379"),
            "--datastore-endpoint is http://10.0.0.1:2379",
        ),
    ] {
        let message = Datastore::from_flags(&dir, endpoint, tls.clone())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            format!(
                "{flags}, but {store}: set --datastore-endpoint to https:// URLs, or unset them"
            )
        );
    }
}

#[test]
fn cidrs_print_for_messages() {
    assert_eq!(cidrs_text(NodeCidrs::default()), "none");
    let cidrs = NodeCidrs {
        ipv4: Some("10.42.0.0/24".parse().unwrap()),
        ipv6: Some("fd00::/64".parse().unwrap()),
    };
    assert_eq!(cidrs_text(cidrs), "10.42.0.0/24,fd00::/64");
}

proptest::proptest! {
    /// Whatever the attempts, picking hands out each node CIDR once until the cluster CIDR is
    /// exhausted, and gives back the candidates it did not choose.
    #[test]
    fn picks_never_repeat(attempts in proptest::collection::vec(0u32..20, 64)) {
        let mut a = allocator("10.42.0.0/18,fd00:42::/58");
        let mut seen = std::collections::BTreeSet::new();
        for attempt in attempts {
            let cidrs = pick(&mut a, attempt).unwrap();
            proptest::prop_assert!(seen.insert(cidrs.ipv4.unwrap()));
            proptest::prop_assert_eq!(a.ipv4().unwrap().allocated(), seen.len() as u64);
            proptest::prop_assert_eq!(a.ipv6().unwrap().allocated(), seen.len() as u64);
        }
        let exhausted = matches!(pick(&mut a, 3), Err(IpamError::Exhausted { .. }));
        proptest::prop_assert!(exhausted);
    }
}
