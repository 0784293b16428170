//! Tests of the messages' JSON: the names tools outside weft read.

use super::*;

#[test]
fn a_node_info_keeps_its_wire_names() {
    let node = NodeInfo {
        name: "n1".to_owned(),
        node_ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        external_ips: Vec::new(),
        ipv4_cidr: "10.42.0.0/24".parse().ok(),
        ipv6_cidr: None,
        created_at: 1_700_000_000,
    };
    let json = serde_json::to_value(&node).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "n1",
            "node-ips": ["192.0.2.1", "2001:db8::1"],
            "external-ips": [],
            "ipv4-cidr": "10.42.0.0/24",
            "ipv6-cidr": null,
            "created-at": 1_700_000_000,
        })
    );
    assert_eq!(serde_json::from_value::<NodeInfo>(json).unwrap(), node);
}

#[test]
fn a_node_info_with_a_bad_cidr_is_refused() {
    let json = serde_json::json!({
        "name": "n1", "node-ips": [], "external-ips": [],
        "ipv4-cidr": "10.42.0.1/24", "created-at": 0,
    });
    assert!(serde_json::from_value::<NodeInfo>(json).is_err());
}
