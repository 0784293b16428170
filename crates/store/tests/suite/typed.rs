//! The typed layer on both back ends: cluster config, nodes, pods, and lease allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use weft_fabric::{BackendData, Lease, MacAddr};
use weft_ipam::{CidrList, IpamError, NodeCidrBounds};
use weft_store::{
    Claim, Created, Event, LeaseAttrs, NodeMaskSizes, NodeRecord, PodRecord, Revision, Store,
    StoreError, Txn, TypedBatch, TypedWatch, UnixTime, keys,
};

use crate::both_backends;
use crate::harness::Backend;

both_backends!(
    cluster_config_is_created_once,
    allocation_within_bounds,
    nodes,
    node_claims,
    pods,
    reregistration_keeps_the_lease,
    release_then_allocate,
    dual_stack_is_all_or_nothing,
    corrupt_lease_is_a_clear_error,
    two_servers_allocate_200_nodes_without_duplicates,
    a_lease_keeps_its_creation_revision,
);

fn cluster(value: &str) -> CidrList {
    CidrList::parse("cluster-cidr", &[value]).expect("a valid cluster CIDR")
}

fn vxlan(last: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ipv4: Some([192, 0, 2, last].into()),
        public_ipv6: None,
        backend: BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr::local_from([0, 1, 2, 3, 4, last])),
            vtep_mac_ipv6: None,
        },
    }
}

fn node(name: &str, hash: &str) -> NodeRecord {
    NodeRecord {
        name: name.to_owned(),
        password_hash: hash.to_owned(),
        node_ips: vec!["192.0.2.10".parse().unwrap()],
        external_ips: Vec::new(),
        created_at: UnixTime::now(),
        cert_fingerprint: None,
        claims: Vec::new(),
    }
}

/// The next item of a typed watch, within 10 s.
async fn next<T: std::fmt::Debug>(watch: &mut TypedWatch<T>) -> Result<TypedBatch<T>, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch item within 10 s")
        .expect("the watch does not end")
}

/// Every subnet index key and its node.
async fn index(store: &Store) -> BTreeMap<String, String> {
    store
        .kv()
        .list(keys::SUBNETS)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8(kv.value).unwrap()))
        .collect()
}

async fn cluster_config_is_created_once(backend: Backend) {
    let store = backend.store().await;
    assert_eq!(
        store.cluster_config::<serde_json::Value>().await.unwrap(),
        None
    );
    let first = json!({"cluster-cidr": "10.42.0.0/16", "flannel-backend": "vxlan"});
    let created = store.create_cluster_config_if_absent(&first).await.unwrap();
    let Created::Created(created) = created else {
        panic!("the first server creates the config: {created:?}")
    };
    assert_eq!(created.value, first);

    // A second server (another handle) finds the first one's config, whatever it brings.
    let other = backend.store().await;
    let second = json!({"cluster-cidr": "10.99.0.0/16"});
    match other
        .create_cluster_config_if_absent(&second)
        .await
        .unwrap()
    {
        Created::Existing(existing) => {
            assert_eq!(existing.value, first);
            assert_eq!(existing.revision, created.revision);
        }
        c @ Created::Created(_) => panic!("the config is created once: {c:?}"),
    }

    // Updates compare the revision.
    let stale = Revision(created.revision.get() - 1);
    assert_eq!(
        store.update_cluster_config(&second, stale).await.unwrap(),
        None
    );
    let updated = store
        .update_cluster_config(&second, created.revision)
        .await
        .unwrap();
    assert!(updated.is_some());
    let stored = other
        .cluster_config::<serde_json::Value>()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value, second);
}

async fn nodes(backend: Backend) {
    let store = backend.store().await;
    let mut watch = store.watch_nodes(store.kv().revision().await.unwrap());

    let n1 = node("n1", "hash-of-machine-a");
    let Created::Created(created) = store.create_node(&n1).await.unwrap() else {
        panic!("n1 is new")
    };
    // Another machine claiming n1 finds the first one's password hash.
    match store
        .create_node(&node("n1", "hash-of-machine-b"))
        .await
        .unwrap()
    {
        Created::Existing(existing) => {
            assert_eq!(existing.value.password_hash, "hash-of-machine-a")
        }
        c @ Created::Created(_) => panic!("n1 exists: {c:?}"),
    }
    let mut moved = n1.clone();
    moved.node_ips = vec!["192.0.2.11".parse().unwrap()];
    let stale = Revision(created.revision.get() - 1);
    assert_eq!(store.update_node(&moved, stale).await.unwrap(), None);
    assert!(
        store
            .update_node(&moved, created.revision)
            .await
            .unwrap()
            .is_some()
    );
    store.put_node(&node("n2", "h2")).await.unwrap();

    let listed = store.list_nodes().await.unwrap();
    let names: Vec<&str> = listed.items.iter().map(|n| n.value.name.as_str()).collect();
    assert_eq!(names, ["n1", "n2"]);
    assert_eq!(store.get_node("n1").await.unwrap().unwrap().value, moved);

    // Delete: the node, its lease and the lease's index keys, in one revision.
    let lease = store
        .allocate_lease(
            "n1",
            &cluster("10.42.0.0/16"),
            NodeMaskSizes::default(),
            &vxlan(1),
        )
        .await
        .unwrap();
    // Its agent's pod reports go too; another node's stay.
    for (node, pod) in [("n1", "p1"), ("n1", "p2"), ("n2", "p3")] {
        store
            .put_pod(&PodRecord {
                namespace: node.to_owned(),
                name: pod.to_owned(),
                node: node.to_owned(),
                ips: vec!["10.42.0.5".parse().unwrap()],
            })
            .await
            .unwrap();
    }
    assert!(store.delete_node("n1").await.unwrap());
    assert!(
        !store.delete_node("n1").await.unwrap(),
        "nothing left to delete"
    );
    assert_eq!(store.get_node("n1").await.unwrap(), None);
    assert_eq!(store.get_lease("n1").await.unwrap(), None);
    assert!(index(&store).await.is_empty());
    assert!(store.list_pods_in("n1").await.unwrap().items.is_empty());
    let kept = store.list_pods().await.unwrap().items;
    assert_eq!(kept.len(), 1, "n2's pod stays");
    assert_eq!(kept[0].value.name, "p3");

    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, Event::Delete { .. })) {
        seen.extend(next(&mut watch).await.unwrap().events);
    }
    let summary: Vec<(String, bool)> = seen
        .iter()
        .map(|e| match e {
            Event::Put { name, .. } => (name.clone(), true),
            Event::Delete { name, .. } => (name.clone(), false),
        })
        .collect();
    let expected = [("n1", true), ("n1", true), ("n2", true), ("n1", false)];
    let expected: Vec<(String, bool)> = expected.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    assert_eq!(summary, expected);
    assert!(lease.created);
    assert!(store.delete_node("n2").await.unwrap());
    assert!(
        store.list_pods().await.unwrap().items.is_empty(),
        "n2's pod goes with n2"
    );

    // Names that can't be keys are refused.
    assert!(matches!(
        store.put_node(&node("a/b", "h")).await,
        Err(StoreError::InvalidName { .. })
    ));
}

async fn node_claims(backend: Backend) {
    let store = backend.store().await;
    let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
    let mac = MacAddr::local_from([0, 1, 2, 3, 4, 5]);
    let claims_of = |ips: &[&str]| -> Vec<Claim> {
        let mut claims: Vec<Claim> = ips.iter().map(|i| Claim::NodeIp(ip(i))).collect();
        claims.push(Claim::VtepMac(mac));
        claims
    };

    // A new node: created with its claims.
    let n1 = node("n1", "h1");
    let r1 = store
        .claim_node(&n1, &claims_of(&["192.0.2.1"]), None)
        .await
        .unwrap()
        .expect("n1 is new");
    // The same record again, from a stale revision or as if new: changed meanwhile.
    assert_eq!(store.claim_node(&n1, &[], None).await.unwrap(), None);
    let stale = Revision(r1.get() - 1);
    assert_eq!(store.claim_node(&n1, &[], Some(stale)).await.unwrap(), None);
    // Unchanged: nothing written.
    assert_eq!(
        store
            .claim_node(&n1, &claims_of(&["192.0.2.1"]), Some(r1))
            .await
            .unwrap(),
        Some(r1)
    );

    // Another node claiming n1's MAC is refused, and nothing of it is stored.
    let n2 = node("n2", "h2");
    let refused = store
        .claim_node(&n2, &claims_of(&["192.0.2.2"]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Claimed { claim: Claim::VtepMac(m), owner } if *m == mac && owner == "n1"),
        "{refused}"
    );
    assert!(store.get_node("n2").await.unwrap().is_none());
    assert!(
        store
            .kv()
            .get(&Claim::NodeIp(ip("192.0.2.2")).key())
            .await
            .unwrap()
            .is_none()
    );

    // n1 moves to a new address: the old one is released, and n2 may take it.
    let mut moved = n1.clone();
    moved.node_ips = vec![ip("192.0.2.11")];
    store
        .claim_node(&moved, &claims_of(&["192.0.2.11"]), Some(r1))
        .await
        .unwrap()
        .expect("n1 is at r1");
    let stored = store.get_node("n1").await.unwrap().unwrap().value;
    assert_eq!(stored.node_ips, moved.node_ips);
    assert_eq!(stored.claims.len(), 2, "{:?}", stored.claims);
    store
        .claim_node(&n2, &[Claim::NodeIp(ip("192.0.2.1"))], None)
        .await
        .unwrap()
        .expect("n2 takes n1's old address");

    // A claim whose owner has no record (a store edited by hand) is taken over.
    let orphan = Claim::ExternalIp(ip("203.0.113.7"));
    store
        .kv()
        .txn(Txn::new().put(orphan.key(), "gone"))
        .await
        .unwrap();
    let r2 = store.get_node("n2").await.unwrap().unwrap().revision;
    store
        .claim_node(
            &n2,
            &[Claim::NodeIp(ip("192.0.2.1")), orphan.clone()],
            Some(r2),
        )
        .await
        .unwrap()
        .expect("n2 takes the orphaned claim");

    // Deleting n1 releases its claims, found by owner: even with a corrupt record.
    store
        .kv()
        .txn(Txn::new().put(keys::node("n1"), "not json"))
        .await
        .unwrap();
    assert!(store.delete_node("n1").await.unwrap());
    let held: Vec<String> = store
        .kv()
        .list(keys::CLAIMS)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| String::from_utf8(kv.value).unwrap())
        .collect();
    assert_eq!(held, ["n2", "n2"], "only n2's claims are left");
    store
        .claim_node(&node("n3", "h3"), &claims_of(&["192.0.2.11"]), None)
        .await
        .unwrap()
        .expect("n3 takes what n1 held");
}

async fn pods(backend: Backend) {
    let store = backend.store().await;
    let mut watch = store.watch_pods(store.kv().revision().await.unwrap());
    let pod = PodRecord {
        namespace: "kube-system".to_owned(),
        name: "coredns-1".to_owned(),
        node: "n1".to_owned(),
        ips: vec!["10.42.0.5".parse::<IpAddr>().unwrap()],
    };
    let put = store.put_pod(&pod).await.unwrap();
    let got = store
        .get_pod("kube-system", "coredns-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.value.clone(), got.revision), (pod.clone(), put));
    assert_eq!(store.list_pods().await.unwrap().items, vec![got.clone()]);
    // One namespace's pods only: a namespace that is a prefix of another's is not mixed in.
    let other = PodRecord {
        namespace: "kube-system-2".to_owned(),
        ..pod.clone()
    };
    store.put_pod(&other).await.unwrap();
    assert_eq!(
        store.list_pods_in("kube-system").await.unwrap().items,
        vec![got]
    );
    assert!(
        store
            .list_pods_in("default")
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        store
            .delete_pod("kube-system-2", "coredns-1")
            .await
            .unwrap()
    );
    assert!(store.delete_pod("kube-system", "coredns-1").await.unwrap());
    assert!(!store.delete_pod("kube-system", "coredns-1").await.unwrap());

    let first = next(&mut watch).await.unwrap();
    assert_eq!(
        first.events,
        vec![Event::Put {
            name: "kube-system/coredns-1".to_owned(),
            value: pod,
            revision: put,
        }]
    );
    // The other namespace's put and delete come between.
    let _ = next(&mut watch).await.unwrap();
    let _ = next(&mut watch).await.unwrap();
    let second = next(&mut watch).await.unwrap();
    assert!(matches!(
        &second.events[..],
        [Event::Delete { name, .. }] if name == "kube-system/coredns-1"
    ));
}

async fn reregistration_keeps_the_lease(backend: Backend) {
    let store = backend.store().await;
    let net = cluster("10.42.0.0/16");
    let masks = NodeMaskSizes::default();
    let first = store
        .allocate_lease("n1", &net, masks, &vxlan(1))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.lease.ipv4_cidr.unwrap().to_string(), "10.42.0.0/24");
    assert_eq!(first.lease.public_ipv4, Some([192, 0, 2, 1].into()));

    // The same node again, here and on another server: the same lease, unchanged.
    let again = store
        .allocate_lease("n1", &net, masks, &vxlan(1))
        .await
        .unwrap();
    assert_eq!(
        (again.lease.clone(), again.revision, again.created),
        (first.lease.clone(), first.revision, false)
    );
    let other = backend.store().await;
    let elsewhere = other
        .allocate_lease("n1", &net, masks, &vxlan(1))
        .await
        .unwrap();
    assert_eq!(elsewhere.lease, first.lease);

    // After a reboot the VTEP MAC changed: same CIDRs, the new MAC published.
    let rebooted = store
        .allocate_lease("n1", &net, masks, &vxlan(9))
        .await
        .unwrap();
    assert!(!rebooted.created);
    assert_eq!(rebooted.lease.ipv4_cidr, first.lease.ipv4_cidr);
    assert_eq!(LeaseAttrs::of(&rebooted.lease), vxlan(9));
    assert!(rebooted.revision > first.revision);
    assert_eq!(
        store.get_lease("n1").await.unwrap().unwrap().value,
        rebooted.lease
    );

    // Publishing through update_lease: attributes may change, CIDRs may not.
    let mut lease = rebooted.lease.clone();
    lease.public_ipv4 = Some([192, 0, 2, 77].into());
    assert!(store.update_lease(&lease).await.unwrap() > rebooted.revision);
    let mut moved = lease.clone();
    moved.ipv4_cidr = Some("10.42.9.0/24".parse().unwrap());
    assert!(matches!(
        store.update_lease(&moved).await,
        Err(StoreError::LeaseCidrsChanged { node, .. }) if node == "n1"
    ));
    let mut ghost = lease.clone();
    ghost.node_name = "ghost".to_owned();
    assert!(matches!(
        store.update_lease(&ghost).await,
        Err(StoreError::NoLease { node }) if node == "ghost"
    ));

    // A second node gets the next CIDR, on either server.
    let n2 = other
        .allocate_lease("n2", &net, masks, &vxlan(2))
        .await
        .unwrap();
    assert_eq!(n2.lease.ipv4_cidr.unwrap().to_string(), "10.42.1.0/24");
}

async fn release_then_allocate(backend: Backend) {
    let store = backend.store().await;
    // Four /24s in a /22.
    let net = cluster("10.42.0.0/22");
    let masks = NodeMaskSizes::default();
    let mut cidrs = BTreeMap::new();
    for n in ["n1", "n2", "n3", "n4"] {
        let lease = store
            .allocate_lease(n, &net, masks, &vxlan(1))
            .await
            .unwrap()
            .lease;
        cidrs.insert(n, lease.ipv4_cidr.unwrap());
    }
    match store.allocate_lease("n5", &net, masks, &vxlan(5)).await {
        Err(StoreError::Ipam(IpamError::Exhausted { capacity, .. })) => assert_eq!(capacity, 4),
        other => panic!("a full cluster CIDR is exhausted, got {other:?}"),
    }

    assert!(store.release_lease("n2").await.unwrap());
    assert!(
        !store.release_lease("n2").await.unwrap(),
        "already released"
    );
    assert!(!store.release_lease("never-registered").await.unwrap());
    assert_eq!(store.get_lease("n2").await.unwrap(), None);
    let idx = index(&store).await;
    assert_eq!(idx.len(), 3);
    assert!(idx.values().all(|n| n != "n2"));

    // The freed CIDR is the only free one: n5 gets it, also through another server that
    // did not see the release.
    let other = backend.store().await;
    let n5 = other
        .allocate_lease("n5", &net, masks, &vxlan(5))
        .await
        .unwrap();
    assert_eq!(n5.lease.ipv4_cidr, Some(cidrs["n2"]));
    assert!(store.release_lease("n5").await.unwrap());
    let n6 = store
        .allocate_lease("n6", &net, masks, &vxlan(6))
        .await
        .unwrap();
    assert_eq!(n6.lease.ipv4_cidr, Some(cidrs["n2"]));
}

async fn dual_stack_is_all_or_nothing(backend: Backend) {
    let store = backend.store().await;
    let masks = NodeMaskSizes::default();
    // Two IPv4 node CIDRs, 256 IPv6 ones.
    let net = CidrList::parse("cluster-cidr", &["10.42.0.0/23,fd00:42::/56"]).unwrap();
    for n in ["n1", "n2"] {
        let lease = store
            .allocate_lease(n, &net, masks, &vxlan(1))
            .await
            .unwrap()
            .lease;
        assert!(
            lease.ipv4_cidr.is_some() && lease.ipv6_cidr.is_some(),
            "{lease:?}"
        );
    }
    let err = store
        .allocate_lease("n3", &net, masks, &vxlan(3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Ipam(IpamError::Exhausted { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("10.42.0.0/23"), "{err}");
    assert_eq!(store.get_lease("n3").await.unwrap(), None);
    let idx = index(&store).await;
    assert_eq!(idx.len(), 4, "no IPv6 index key for n3: {idx:?}");

    // And the other way round: IPv6 exhausted, IPv4 plentiful.
    let store = backend.store().await;
    let net = CidrList::parse("cluster-cidr", &["fd00:43::/63,10.43.0.0/16"]).unwrap();
    for n in ["m1", "m2"] {
        store
            .allocate_lease(n, &net, masks, &vxlan(1))
            .await
            .unwrap();
    }
    assert!(matches!(
        store.allocate_lease("m3", &net, masks, &vxlan(3)).await,
        Err(StoreError::Ipam(IpamError::Exhausted { .. }))
    ));
    let ipv4_keys = index(&store)
        .await
        .into_keys()
        .filter(|k| k.starts_with("/weft/subnets/ipv4/10.43."))
        .count();
    assert_eq!(ipv4_keys, 2, "no IPv4 index key for m3");
}

async fn corrupt_lease_is_a_clear_error(backend: Backend) {
    let store = backend.store().await;
    let net = cluster("10.42.0.0/16");
    let masks = NodeMaskSizes::default();
    let mut watch = store.watch_leases(store.kv().revision().await.unwrap());

    let key = keys::lease("n1");
    let garbage = Txn::new().put(
        &key,
        "{\"node-name\": \"n1\", \"ipv4-cidr\": \"10.42.0.0/33\"}",
    );
    store.kv().txn(garbage).await.unwrap();

    let expect_corrupt = |result: Result<(), StoreError>, doing: &str| match result {
        Err(e @ StoreError::Corrupt { .. }) => {
            let message = e.to_string();
            assert!(message.contains("/weft/leases/n1"), "{doing}: {message}");
            assert!(message.contains("lease"), "{doing}: {message}");
        }
        other => panic!("{doing}: expected a corrupt-record error, got {other:?}"),
    };
    expect_corrupt(store.get_lease("n1").await.map(drop), "get");
    // A list leaves it out and names it, so the other leases still count.
    let listed = store.list_leases().await.unwrap();
    assert!(listed.items.is_empty());
    assert_eq!(listed.corrupt.len(), 1);
    expect_corrupt(Err(listed.corrupt[0].clone().into_error()), "list");
    assert!(listed.corrupt[0].to_string().contains("/weft/leases/n1"));
    expect_corrupt(
        store
            .allocate_lease("n1", &net, masks, &vxlan(1))
            .await
            .map(drop),
        "allocate",
    );
    // The watch reports it and goes on.
    expect_corrupt(next(&mut watch).await.map(drop), "watch");
    let batch = next(&mut watch).await.unwrap();
    assert!(batch.events.is_empty());

    // A lease filed under another node's key is corrupt too.
    let misfiled = Lease {
        node_name: "n2".to_owned(),
        ipv4_cidr: None,
        ipv6_cidr: None,
        public_ipv4: None,
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    };
    let bytes = serde_json::to_vec(&misfiled).unwrap();
    store
        .kv()
        .txn(Txn::new().put(keys::lease("n3"), bytes))
        .await
        .unwrap();
    let err = store.get_lease("n3").await.unwrap_err();
    assert!(
        err.to_string().contains("belongs at /weft/leases/n2"),
        "{err}"
    );

    // Other nodes still register, and deleting the node clears the corrupt lease.
    let n2 = store
        .allocate_lease("n2", &net, masks, &vxlan(2))
        .await
        .unwrap();
    assert!(n2.created);
    assert!(store.release_lease("n1").await.unwrap());
    assert!(store.delete_node("n3").await.unwrap());
    let n1 = store
        .allocate_lease("n1", &net, masks, &vxlan(1))
        .await
        .unwrap();
    assert!(n1.created);

    let mut names = BTreeSet::new();
    while names.len() < 2 {
        match next(&mut watch).await {
            Ok(batch) => {
                for event in batch.events {
                    if let Event::Put { name, .. } = event {
                        names.insert(name);
                    }
                }
            }
            // The misfiled lease at n3.
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "/weft/leases/n3"),
            Err(e) => panic!("unexpected watch error: {e}"),
        }
    }
    assert!(names.contains("n1") && names.contains("n2"), "{names:?}");
}

async fn two_servers_allocate_200_nodes_without_duplicates(backend: Backend) {
    const NODES: usize = 200;
    let servers = [backend.store().await, backend.store().await];
    let net = CidrList::parse("cluster-cidr", &["10.42.0.0/16,fd00:42::/56"]).unwrap();
    let masks = NodeMaskSizes::default();

    // Both servers register every node, in opposite orders, 16 at a time each: every node is
    // raced for by both, and every free CIDR by both.
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:03}")).collect();
    let run = |server: Store, order: Vec<String>| {
        tokio::spawn(async move {
            futures::stream::iter(order)
                .map(|name| {
                    let server = server.clone();
                    async move {
                        let attrs = vxlan(1);
                        let got = server.allocate_lease(&name, &net, masks, &attrs).await;
                        (name, got.expect("allocation succeeds"))
                    }
                })
                .buffer_unordered(16)
                .collect::<BTreeMap<_, _>>()
                .await
        })
    };
    let forward = run(servers[0].clone(), names.clone());
    let backward = run(servers[1].clone(), names.iter().rev().cloned().collect());
    let (a, b) = (forward.await.unwrap(), backward.await.unwrap());

    for name in &names {
        assert_eq!(
            a[name].lease, b[name].lease,
            "both servers agree on {name}'s lease"
        );
    }
    let created = a.values().chain(b.values()).filter(|x| x.created).count();
    assert_eq!(created, NODES, "each lease is created once");
    let v4: BTreeSet<_> = a.values().map(|x| x.lease.ipv4_cidr.unwrap()).collect();
    let v6: BTreeSet<_> = a.values().map(|x| x.lease.ipv6_cidr.unwrap()).collect();
    assert_eq!(
        (v4.len(), v6.len()),
        (NODES, NODES),
        "no CIDR is handed out twice"
    );

    let leases = servers[0].list_leases().await.unwrap();
    assert_eq!(leases.items.len(), NODES);
    let idx = index(&servers[1]).await;
    assert_eq!(idx.len(), 2 * NODES);
    for lease in &leases.items {
        let lease = &lease.value;
        for cidr in [
            weft_ipam::Cidr::V4(lease.ipv4_cidr.unwrap()),
            weft_ipam::Cidr::V6(lease.ipv6_cidr.unwrap()),
        ] {
            assert_eq!(idx[&keys::subnet(cidr)], lease.node_name);
        }
    }
}

/// Agents keep the first claimant of a value by the lease's creation revision: the store fills
/// it from the key on every read and watch event, an update keeps it, and no writer sets it.
async fn a_lease_keeps_its_creation_revision(backend: Backend) {
    let store = backend.store().await;
    let net = cluster("10.42.0.0/16");
    let masks = NodeMaskSizes::default();
    let mut watch = store.watch_leases(store.kv().revision().await.unwrap());
    let created_revision = |lease: Option<weft_store::Versioned<Lease>>| {
        lease.expect("the lease exists").value.created_revision
    };

    let first = store
        .allocate_lease("n1", &net, masks, &vxlan(1))
        .await
        .unwrap();
    let created = first.revision.get();
    assert!(created > 0);
    assert_eq!(first.lease.created_revision, created);
    assert_eq!(
        created_revision(store.get_lease("n1").await.unwrap()),
        created
    );

    // A new MAC after a reboot, and a writer that claims an older creation revision: the
    // lease changes, its creation revision does not, and the stored JSON never holds one.
    let rebooted = store
        .allocate_lease("n1", &net, masks, &vxlan(9))
        .await
        .unwrap();
    assert!(rebooted.revision > first.revision);
    assert_eq!(rebooted.lease.created_revision, created);
    let mut claimed = rebooted.lease.clone();
    claimed.public_ipv4 = Some([192, 0, 2, 77].into());
    claimed.created_revision = 1;
    let updated = store.update_lease(&claimed).await.unwrap();
    assert!(updated > rebooted.revision);
    let raw = store.kv().get(&keys::lease("n1")).await.unwrap().unwrap();
    let stored = String::from_utf8(raw.value).unwrap();
    assert!(!stored.contains("created-revision"), "{stored}");
    // Only the claimed revision differs from what is stored: nothing to write.
    claimed.created_revision = 0;
    assert_eq!(store.update_lease(&claimed).await.unwrap(), updated);
    // A store edited by hand can't set it either.
    let forged = stored.replacen('{', "{\"created-revision\":1,", 1);
    store
        .kv()
        .txn(Txn::new().put(keys::lease("n1"), forged))
        .await
        .unwrap();
    let read = store.get_lease("n1").await.unwrap().unwrap();
    assert_eq!(read.value.created_revision, created);
    assert_eq!(read.value.public_ipv4, Some([192, 0, 2, 77].into()));

    // A node registered later has a later one; lists and watch events carry them.
    let second = store
        .allocate_lease("n2", &net, masks, &vxlan(2))
        .await
        .unwrap();
    assert!(second.lease.created_revision > created);
    let listed: Vec<(String, u64)> = store
        .list_leases()
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|v| (v.value.node_name, v.value.created_revision))
        .collect();
    assert_eq!(
        listed,
        [
            ("n1".to_owned(), created),
            ("n2".to_owned(), second.lease.created_revision)
        ]
    );
    let mut puts = Vec::new();
    while puts.len() < 5 {
        for event in next(&mut watch).await.unwrap().events {
            if let Event::Put { name, value, .. } = event {
                puts.push((name, value.created_revision));
            }
        }
    }
    let n1 = ("n1".to_owned(), created);
    let n2 = ("n2".to_owned(), second.lease.created_revision);
    assert_eq!(puts, [n1.clone(), n1.clone(), n1.clone(), n1, n2]);

    // Deleted and registered again, a node's lease is new: it no longer predates n2's.
    assert!(store.delete_node("n1").await.unwrap());
    let again = store
        .allocate_lease("n1", &net, masks, &vxlan(1))
        .await
        .unwrap();
    assert!(again.lease.created_revision > second.lease.created_revision);
    assert_eq!(
        created_revision(store.get_lease("n1").await.unwrap()),
        again.lease.created_revision
    );
}

/// flannel-conf's SubnetMin/SubnetMax: every new lease lies between them, on every server, and
/// the cluster is exhausted when they are.
async fn allocation_within_bounds(backend: Backend) {
    let store = backend.store().await;
    let other = backend.store().await;
    let net = cluster("10.42.0.0/16");
    let masks = NodeMaskSizes::default();
    let bounds = NodeCidrBounds {
        ipv4: (
            Some("10.42.8.0/24".parse().unwrap()),
            Some("10.42.10.0/24".parse().unwrap()),
        ),
        ipv6: (None, None),
    };
    let mut got = BTreeSet::new();
    for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let on = if i % 2 == 0 { &store } else { &other };
        let lease = on
            .allocate_lease_within(name, &net, masks, bounds, &vxlan(i as u8 + 1))
            .await
            .unwrap()
            .lease;
        got.insert(lease.ipv4_cidr.unwrap().to_string());
    }
    assert_eq!(
        got,
        BTreeSet::from(["10.42.8.0/24", "10.42.9.0/24", "10.42.10.0/24"].map(String::from))
    );
    assert!(matches!(
        store
            .allocate_lease_within("n4", &net, masks, bounds, &vxlan(4))
            .await,
        Err(StoreError::Ipam(IpamError::Exhausted { .. }))
    ));
}
