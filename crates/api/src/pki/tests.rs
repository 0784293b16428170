//! Tests of the cluster CA: identities, lifetimes, what a certificate says about itself, which
//! certificates a server may keep, and the `certificate check` lines.

use super::*;

const DAY: Duration = Duration::from_secs(SECONDS_A_DAY);

fn info(pem: &str) -> CertificateInfo {
    let mut all = certificates_info(pem).expect("parses");
    assert_eq!(all.len(), 1, "one certificate");
    all.remove(0)
}

fn der(pem: &str) -> CertificateDer<'static> {
    first_der(pem).expect("a certificate")
}

/// Whether `t` is within a minute of `expected`.
fn about(t: SystemTime, expected: SystemTime) -> bool {
    let gap = t
        .duration_since(expected)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    gap < Duration::from_secs(60)
}

#[test]
fn each_certificate_has_its_identity() {
    let ca = ClusterCa::generate().expect("a CA");
    let again = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).expect("reads back");
    assert_eq!(again.hash(), ca.hash());
    assert_eq!(ca.hash().len(), 64);
    let cases = [
        (
            again.issue_node("node-a").expect("issued"),
            ClientIdentity::Node("node-a".into()),
            "CN=system:node:node-a, O=system:nodes",
        ),
        (
            ca.issue_admin().expect("issued"),
            ClientIdentity::Admin,
            "CN=system:admin, O=system:masters",
        ),
        (
            ca.issue_kube_apiserver().expect("issued"),
            ClientIdentity::KubeApiserver,
            "CN=system:apiserver, O=system:masters",
        ),
    ];
    for (pair, identity, subject) in cases {
        assert_eq!(
            client_identity(&der(&pair.cert_pem)).expect("parses"),
            identity
        );
        let info = info(&pair.cert_pem);
        assert_eq!(info.subject, subject);
        assert_eq!(info.usages, ["ClientAuth"], "{subject}");
        assert_eq!(info.identity(), identity);
    }
    let server = ca
        .issue_server(
            &["weft.example".into()],
            &["192.0.2.1".parse().expect("an IP")],
        )
        .expect("issued");
    assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!format!("{server:?}").contains("PRIVATE"));
    assert_eq!(info(&server.cert_pem).usages, ["ServerAuth"]);
    assert_eq!(info(ca.cert_pem()).usages, ["CertSign"]);
}

#[test]
fn identities_need_both_the_name_and_the_group() {
    let masters = vec![MASTERS_ORGANIZATION.to_owned()];
    let nodes = vec![NODE_ORGANIZATION.to_owned()];
    let cases = [
        ("system:admin", masters.clone(), ClientIdentity::Admin),
        (
            "system:apiserver",
            masters.clone(),
            ClientIdentity::KubeApiserver,
        ),
        (
            "system:node:a",
            nodes.clone(),
            ClientIdentity::Node("a".into()),
        ),
        // The group alone makes no admin, nor the name alone.
        (
            "someone",
            masters.clone(),
            ClientIdentity::Other("someone".into()),
        ),
        (
            "system:admin",
            nodes.clone(),
            ClientIdentity::Other("system:admin".into()),
        ),
        (
            "system:apiserver",
            Vec::new(),
            ClientIdentity::Other("system:apiserver".into()),
        ),
        (
            "system:node:a",
            masters,
            ClientIdentity::Other("system:node:a".into()),
        ),
    ];
    for (cn, orgs, expect) in cases {
        assert_eq!(identity_of(cn, &orgs), expect, "{cn} {orgs:?}");
    }
}

#[test]
fn lifetimes_are_k3s() {
    let now = SystemTime::now();
    let ca = ClusterCa::generate().expect("a CA");
    let ca_info = info(ca.cert_pem());
    assert!(about(ca_info.not_before, now - CLOCK_SKEW), "{ca_info:?}");
    assert!(about(ca_info.not_after, now + 3650 * DAY), "{ca_info:?}");
    let leaves = [
        ca.issue_server(&[], &[]).expect("issued"),
        ca.issue_node("node-a").expect("issued"),
        ca.issue_admin().expect("issued"),
        ca.issue_kube_apiserver().expect("issued"),
    ];
    for leaf in leaves {
        let info = info(&leaf.cert_pem);
        assert!(
            about(info.not_before, now - Duration::from_secs(3600)),
            "{info:?}"
        );
        assert!(about(info.not_after, now + 365 * DAY), "{info:?}");
        assert_eq!(info.expiry(now), Expiry::Ok);
    }
    // The test knob moves only the end.
    let short = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem())
        .expect("reads back")
        .with_leaf_expiry(now + 30 * DAY);
    let info = info(&short.issue_node("node-a").expect("issued").cert_pem);
    assert!(about(info.not_after, now + 30 * DAY), "{info:?}");
    assert!(about(info.not_before, now - CLOCK_SKEW), "{info:?}");
}

#[test]
fn expiry_at_an_instant() {
    let now = SystemTime::now();
    let at = |not_before: SystemTime, not_after: SystemTime| CertificateInfo {
        subject: String::new(),
        common_name: String::new(),
        organizations: Vec::new(),
        usages: Vec::new(),
        names: ServingNames::default(),
        not_before,
        not_after,
    };
    let cases = [
        (at(now - DAY, now + 365 * DAY), Expiry::Ok),
        (at(now - DAY, now + 90 * DAY + DAY), Expiry::Ok),
        (at(now - DAY, now + 89 * DAY), Expiry::Expiring),
        (
            at(now - DAY, now + Duration::from_secs(1)),
            Expiry::Expiring,
        ),
        (at(now - 2 * DAY, now - DAY), Expiry::Expired),
        (at(now - DAY, now), Expiry::Expired),
        (at(now + DAY, now + 365 * DAY), Expiry::NotYetValid),
    ];
    for (info, expect) in cases {
        assert_eq!(info.expiry(now), expect, "{info:?}");
    }
}

#[test]
fn a_server_keeps_only_certificates_that_are_still_good() {
    let now = SystemTime::now();
    let ca = ClusterCa::generate().expect("a CA");
    let with_expiry = |not_after: SystemTime| {
        ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem())
            .expect("reads back")
            .with_leaf_expiry(not_after)
    };
    let fresh = ca.issue_admin().expect("issued");
    let other = ClusterCa::generate()
        .expect("a CA")
        .issue_admin()
        .expect("issued");
    let mismatched = CertifiedKey {
        cert_pem: fresh.cert_pem.clone(),
        key_pem: ca.issue_admin().expect("issued").key_pem,
    };
    let cases = [
        ("fresh", fresh.clone(), true),
        ("another CA's", other, false),
        ("another key", mismatched, false),
        (
            "91 days left",
            with_expiry(now + 91 * DAY).issue_admin().expect("issued"),
            true,
        ),
        (
            "89 days left",
            with_expiry(now + 89 * DAY).issue_admin().expect("issued"),
            false,
        ),
        (
            "expired",
            with_expiry(now - Duration::from_secs(60))
                .issue_admin()
                .expect("issued"),
            false,
        ),
        // What weft issued before certificates had lifetimes: valid for a century.
        (
            "outlives a leaf",
            with_expiry(now + 2 * 365 * DAY)
                .issue_admin()
                .expect("issued"),
            false,
        ),
        (
            "damaged",
            CertifiedKey {
                cert_pem: "not a certificate".into(),
                key_pem: fresh.key_pem.clone(),
            },
            false,
        ),
    ];
    for (what, pair, keep) in cases {
        let kept = ca.reusable(&pair, now);
        assert_eq!(kept.is_some(), keep, "{what}");
        if let Some(info) = kept {
            assert_eq!(info.identity(), ClientIdentity::Admin, "{what}");
        }
    }
}

#[test]
fn a_serving_certificate_names_what_it_was_asked_for() {
    let ca = ClusterCa::generate().expect("a CA");
    let names = ["weft.example".to_owned(), "n1".to_owned()];
    let ips: [IpAddr; 2] = [
        "192.0.2.1".parse().expect("an IP"),
        "2001:db8::1".parse().expect("an IP"),
    ];
    let serving = ca.issue_server(&names, &ips).expect("issued");
    let info = info(&serving.cert_pem);
    let wanted = ServingNames::new(&names, &ips);
    assert_eq!(info.names, wanted);
    assert_eq!(
        wanted.dns.iter().map(String::as_str).collect::<Vec<_>>(),
        ["localhost", "n1", "weft.example"]
    );
    let ip_texts: Vec<String> = wanted.ips.iter().map(ToString::to_string).collect();
    assert_eq!(ip_texts, ["127.0.0.1", "192.0.2.1", "::1", "2001:db8::1"]);
    assert_ne!(info.names, ServingNames::new(&names, &ips[..1]));
}

#[test]
fn check_lines_read_as_k3s_writes_them() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_788_860_721);
    let at = |not_before: SystemTime, not_after: SystemTime| CertificateInfo {
        subject: "CN=system:admin, O=system:masters".into(),
        common_name: "system:admin".into(),
        organizations: vec!["system:masters".into()],
        usages: vec!["ClientAuth"],
        names: ServingNames::default(),
        not_before,
        not_after,
    };
    let file = "server/tls/client-admin.crt";
    let cases = [
        (
            at(now - DAY, now + 200 * DAY),
            "server/tls/client-admin.crt: certificate CN=system:admin, O=system:masters (ClientAuth) is ok, expires at 2027-03-27T09:45:21Z (200 days left)",
            false,
        ),
        (
            at(now - DAY, now + DAY + Duration::from_secs(5)),
            "server/tls/client-admin.crt: certificate CN=system:admin, O=system:masters (ClientAuth) will expire within 90 days at 2026-09-09T09:45:26Z (1 day left)",
            false,
        ),
        (
            at(now - 400 * DAY, now - 3 * DAY),
            "server/tls/client-admin.crt: certificate CN=system:admin, O=system:masters (ClientAuth) expired at 2026-09-05T09:45:21Z (3 days ago)",
            true,
        ),
        (
            at(now + DAY, now + 300 * DAY),
            "server/tls/client-admin.crt: certificate CN=system:admin, O=system:masters (ClientAuth) is not valid before 2026-09-09T09:45:21Z (300 days left)",
            true,
        ),
    ];
    for (info, line, failed) in cases {
        let check = CertificateCheck::new(file.to_owned(), info, now);
        assert_eq!(check.to_string(), line);
        assert_eq!(check.failed(), failed, "{line}");
    }
}

#[test]
fn rfc3339_is_utc_to_the_second() {
    let cases = [
        (0, "1970-01-01T00:00:00Z"),
        (1_788_860_721, "2026-09-08T09:45:21Z"),
        (4_102_444_800, "2100-01-01T00:00:00Z"),
    ];
    for (seconds, text) in cases {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)),
            text
        );
    }
}

#[test]
fn damaged_ca_is_refused() {
    let ca = ClusterCa::generate().expect("a CA");
    assert!(ClusterCa::from_pem("not a cert", &ca.key_pem()).is_err());
    assert!(ClusterCa::from_pem(ca.cert_pem(), "not a key").is_err());
    assert!(certificates_info("not a cert").is_err());
}
