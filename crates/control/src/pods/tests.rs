//! Tests of pod reports: which reports are refused, and that a report replaces exactly the
//! reporting node's pods.

use weft_api::protocol::ReportedPod;
use weft_store::Datastore;

use super::*;

fn pod(id: &str, ips: &[&str]) -> ReportedPod {
    ReportedPod {
        id: id.to_owned(),
        ips: ips.iter().map(|ip| ip.parse().expect("an IP")).collect(),
    }
}

/// Checks `pods` as one report: `Ok` with the number of pods kept, or an error containing `err`.
fn check_report(pods: Vec<ReportedPod>, expect: Result<usize, &str>) {
    let report = PodReport { pods };
    match (check(&report), expect) {
        (Ok(wanted), Ok(len)) => assert_eq!(wanted.len(), len),
        (Err(reason), Err(part)) => assert!(reason.contains(part), "{reason}"),
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn reports_are_checked() {
    check_report(Vec::new(), Ok(0));
    check_report(vec![pod("abc", &["10.42.0.5", "fd00::5"])], Ok(1));
    check_report(vec![pod("", &["10.42.0.5"])], Err("must be 1 to 253"));
    check_report(vec![pod("a/b", &["10.42.0.5"])], Err("without '/'"));
    check_report(vec![pod("..", &["10.42.0.5"])], Err("must be 1 to 253"));
    check_report(
        vec![pod(&"a".repeat(254), &["10.42.0.5"])],
        Err("must be 1 to 253"),
    );
    check_report(vec![pod("abc", &[])], Err("1 to 8 IPs"));
    check_report(
        vec![pod("abc", &["10.42.0.5"]), pod("abc", &["10.42.0.6"])],
        Err("reported twice"),
    );
    let many = (0..=MAX_REPORTED_PODS)
        .map(|i| pod(&i.to_string(), &["10.42.0.5"]))
        .collect();
    check_report(many, Err("at most 4096 pods"));
}

fn lease(node: &str, ipv4: &str, ipv6: Option<&str>) -> Lease {
    let mut json = serde_json::json!({ "node-name": node, "ipv4-cidr": ipv4 });
    if let Some(ipv6) = ipv6 {
        json["ipv6-cidr"] = serde_json::json!(ipv6);
    }
    serde_json::from_value(json).expect("a lease")
}

#[test]
fn every_reported_ip_must_lie_in_the_nodes_lease() {
    let n2 = lease("n2", "10.42.1.0/24", Some("fd00:42:0:1::/64"));
    let check_of = |lease: Option<&Lease>, pods: Vec<ReportedPod>| {
        let wanted = check(&PodReport { pods }).expect("a valid report");
        check_lease("n2", lease, &wanted)
    };
    // (lease, pods, None when accepted or the whole error)
    let cases: Vec<(Option<&Lease>, Vec<ReportedPod>, Option<&str>)> = vec![
        (Some(&n2), Vec::new(), None),
        (
            Some(&n2),
            vec![
                pod("a", &["10.42.1.5", "fd00:42:0:1::5"]),
                pod("b", &["10.42.1.6"]),
            ],
            None,
        ),
        // The server's own node IP.
        (
            Some(&n2),
            vec![pod("web", &["10.0.0.5"])],
            Some(
                "pod ip 10.0.0.5 of pod web is outside node n2's pod CIDRs 10.42.1.0/24, fd00:42:0:1::/64; a node reports only pods of its own lease",
            ),
        ),
        // Partly inside is refused whole.
        (
            Some(&n2),
            vec![
                pod("a", &["10.42.1.5"]),
                pod("b", &["10.42.1.6", "fd00:42:0:2::6"]),
            ],
            Some(
                "pod ip fd00:42:0:2::6 of pod b is outside node n2's pod CIDRs 10.42.1.0/24, fd00:42:0:1::/64; a node reports only pods of its own lease",
            ),
        ),
        // An IPv4-mapped address is no pod of an IPv4 lease.
        (
            Some(&n2),
            vec![pod("a", &["::ffff:10.42.1.5"])],
            Some(
                "pod ip ::ffff:10.42.1.5 of pod a is outside node n2's pod CIDRs 10.42.1.0/24, fd00:42:0:1::/64; a node reports only pods of its own lease",
            ),
        ),
        // No lease: no pods, but an empty report is fine.
        (None, Vec::new(), None),
        (
            None,
            vec![pod("a", &["10.42.1.5"])],
            Some(
                "node n2 has no lease with a pod CIDR, so it can report no pods; a node reports only pods of its own lease (register it again)",
            ),
        ),
    ];
    for (lease, pods, expect) in cases {
        let got = check_of(lease, pods.clone());
        assert_eq!(got.as_ref().err().map(String::as_str), expect, "{pods:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_replaces_only_the_nodes_own_pods() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Datastore::Embedded {
        data_dir: dir.path().to_owned(),
    }
    .open()
    .await
    .expect("a store");
    let wanted = |pods: Vec<ReportedPod>| check(&PodReport { pods }).expect("a valid report");
    let ids = |listed: weft_store::Listed<PodRecord>| {
        listed
            .items
            .into_iter()
            .map(|pod| (pod.value.node, pod.value.name, pod.value.ips.len()))
            .collect::<Vec<_>>()
    };

    let first = wanted(vec![pod("a", &["10.42.1.2"]), pod("b", &["10.42.1.3"])]);
    assert_eq!(replace(&store, "node-1", &first).await.expect("stored"), 2);
    let other = wanted(vec![pod("a", &["10.42.2.2"])]);
    assert_eq!(replace(&store, "node-2", &other).await.expect("stored"), 1);
    // The same report again changes nothing.
    assert_eq!(replace(&store, "node-1", &first).await.expect("stored"), 0);

    // b went, a got a second IP, c came.
    let second = wanted(vec![
        pod("a", &["10.42.1.2", "fd00:1::2"]),
        pod("c", &["10.42.1.4"]),
    ]);
    assert_eq!(replace(&store, "node-1", &second).await.expect("stored"), 3);
    assert_eq!(
        ids(store.list_pods().await.expect("listed")),
        [
            ("node-1".to_owned(), "a".to_owned(), 2),
            ("node-1".to_owned(), "c".to_owned(), 1),
            ("node-2".to_owned(), "a".to_owned(), 1),
        ]
    );
    // An empty report removes the node's pods, and only those.
    assert_eq!(
        replace(&store, "node-1", &BTreeMap::new())
            .await
            .expect("stored"),
        2
    );
    assert_eq!(
        ids(store.list_pods().await.expect("listed")),
        [("node-2".to_owned(), "a".to_owned(), 1)]
    );
}
