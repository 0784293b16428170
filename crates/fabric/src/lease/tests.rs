//! Tests of [`Lease`]'s derived values.

use super::*;

fn lease(v4: Option<&str>, v6: Option<&str>) -> Lease {
    Lease {
        node_name: "node-1".to_owned(),
        ipv4_cidr: v4.map(|cidr| cidr.parse().unwrap()),
        ipv6_cidr: v6.map(|cidr| cidr.parse().unwrap()),
        public_ipv4: None,
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    }
}

#[test]
fn pod_cidrs_are_the_families_it_has_ipv4_first() {
    let shown = |lease: Lease| -> Vec<String> {
        lease.pod_cidrs().iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        shown(lease(Some("10.42.1.0/24"), Some("fd00:42:0:1::/64"))),
        ["10.42.1.0/24", "fd00:42:0:1::/64"]
    );
    assert_eq!(
        shown(lease(None, Some("fd00:42:0:1::/64"))),
        ["fd00:42:0:1::/64"]
    );
    assert_eq!(shown(lease(Some("10.42.1.0/24"), None)), ["10.42.1.0/24"]);
    assert!(shown(lease(None, None)).is_empty());
}
