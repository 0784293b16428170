//! Node certificates expire and renew: an agent that starts with a certificate near its end
//! leaves with a fresh one, and a running agent's lease source renews its certificate when its
//! check finds too little left, and only then, and goes on watching.

use std::time::{Duration, SystemTime};

use weft_api::pki::{CertificateInfo, ClusterCa, Expiry, LEAF_VALIDITY, certificate_info};
use weft_node::identity::Credentials;
use weft_node::source::CertificateRenewal;

use crate::harness::{PATIENCE, TestNode, Watcher, embedded as server, within};

const DAY: Duration = Duration::from_secs(86_400);

/// The node certificate `node` has saved.
fn saved(node: &TestNode) -> Credentials {
    Credentials::load(node.dir.path())
        .expect("readable")
        .expect("saved")
}

fn info(creds: &Credentials) -> CertificateInfo {
    certificate_info(&creds.cert_pem).expect("a certificate")
}

/// Whether `info` is a certificate issued about now: a year left, give or take a day.
fn fresh(info: &CertificateInfo) -> bool {
    let left = info
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    left > LEAF_VALIDITY - DAY && left <= LEAF_VALIDITY
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_starts_with_a_certificate_near_its_end_leaves_with_a_fresh_one() {
    let (dir, server) = server().await;
    let node = TestNode::new("node-a", 1);
    // What an agent that last registered nine months ago holds: 30 days left.
    let tls = dir.path().join("server/tls");
    let read = |file: &str| std::fs::read_to_string(tls.join(file)).expect("the server's CA");
    let ca = ClusterCa::from_pem(&read("server-ca.crt"), &read("server-ca.key"))
        .expect("the cluster CA")
        .with_leaf_expiry(SystemTime::now() + 30 * DAY);
    let old = ca.issue_node("node-a").expect("a node certificate");
    Credentials {
        ca_pem: server.ca_pem.clone(),
        cert_pem: old.cert_pem.clone(),
        key_pem: old.key_pem,
        servers: vec![server.url.clone()],
    }
    .save(node.dir.path())
    .expect("saved");
    assert_eq!(
        info(&saved(&node)).expiry(SystemTime::now()),
        Expiry::Expiring
    );

    let (_, source) = node
        .join(&[&server.url], &server.token)
        .await
        .expect("joins");
    let now = saved(&node);
    assert_ne!(now.cert_pem, old.cert_pem);
    assert!(fresh(&info(&now)), "{:?}", info(&now));
    assert_eq!(source.credentials().borrow().as_ref(), Some(&now));
    // The source's client presents it.
    source
        .client()
        .expect("registered")
        .list_leases(&server.url)
        .await
        .expect("the fresh certificate lists leases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_renews_when_its_check_finds_too_little_left() {
    let (_dir, server) = server().await;
    // (how much must be left, whether a fresh certificate is renewed)
    let cases = [
        // K3s's threshold: a certificate with a year left stays.
        (Duration::from_secs(90 * 86_400), false),
        // More than any certificate has: every check renews.
        (LEAF_VALIDITY + DAY, true),
    ];
    for (index, (renew_before, renews)) in (1u8..).zip(cases) {
        let node = TestNode::new(&format!("node-{index}"), index);
        let renewal = CertificateRenewal {
            check_interval: Duration::from_millis(100),
            renew_before,
        };
        let source = node
            .source(&[&server.url], &server.token)
            .with_renewal(renewal);
        let (_, source) = node.join_with(source).await.expect("joins");
        let first = saved(&node);
        let mut credentials = source.credentials();
        credentials.borrow_and_update();
        let mut watcher = Watcher::spawn(source);
        watcher
            .until("the first snapshot", PATIENCE, |leases| {
                leases.contains_key(&node.name)
            })
            .await;

        if !renews {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert!(!credentials.has_changed().expect("the source runs"));
            assert_eq!(saved(&node), first, "renewed with a year left");
            continue;
        }
        within(PATIENCE, "a renewal", credentials.changed())
            .await
            .expect("the source runs");
        let renewed = credentials
            .borrow_and_update()
            .clone()
            .expect("credentials");
        assert_ne!(renewed.cert_pem, first.cert_pem);
        assert!(fresh(&info(&renewed)));
        // A renewed certificate is saved for the next start.
        assert_ne!(saved(&node).cert_pem, first.cert_pem);

        // The watch goes on: a node that joins now reaches it.
        let other = TestNode::new("node-9", 9);
        other
            .join(&[&server.url], &server.token)
            .await
            .expect("joins");
        watcher
            .until("node-9's lease", PATIENCE, |leases| {
                leases.contains_key("node-9")
            })
            .await;
    }
}
