//! Unit tests of the records: their JSON, and decoding what the store holds.

use weft_ipam::Ipv4Cidr;

use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        create_revision: Revision(1),
        mod_revision: Revision(5),
    }
}

#[test]
fn node_records_are_kebab_case_json() {
    let node = NodeRecord {
        name: "n1".to_owned(),
        password_hash: "h".to_owned(),
        node_ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        external_ips: Vec::new(),
        created_at: UnixTime(1_700_000_000),
        cert_fingerprint: None,
        claims: Vec::new(),
    };
    let json = serde_json::to_value(&node).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "n1",
            "password-hash": "h",
            "node-ips": ["192.0.2.1", "2001:db8::1"],
            "external-ips": [],
            "created-at": 1_700_000_000u64,
        })
    );
    let back: NodeRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, node);
}

#[test]
fn pod_records_name_namespace_and_pod() {
    let pod = PodRecord {
        namespace: "default".to_owned(),
        name: "web-0".to_owned(),
        node: "n1".to_owned(),
        ips: vec!["10.42.0.9".parse().unwrap()],
    };
    assert_eq!(pod.key(), "/weft/pods/default/web-0");
    let stored = kv(
        "/weft/pods/default/web-0",
        &serde_json::to_string(&pod).unwrap(),
    );
    assert_eq!(decode::<PodRecord>(&stored).unwrap().value, pod);
    assert_eq!(name_of::<PodRecord>(&stored.key), "default/web-0");
    let bad = PodRecord {
        node: String::new(),
        ..pod
    };
    assert!(bad.check_names().is_err());
}

#[test]
fn leases_decode_with_their_revision() {
    let lease = LeaseAttrs::default().lease(
        "n1",
        NodeCidrs {
            ipv4: Some("10.42.1.0/24".parse::<Ipv4Cidr>().unwrap()),
            ipv6: None,
        },
    );
    let stored = kv("/weft/leases/n1", &serde_json::to_string(&lease).unwrap());
    let decoded = decode::<Lease>(&stored).unwrap();
    // The creation revision is the key's, whatever the JSON says; it is never encoded.
    let expected = Versioned {
        value: Lease {
            created_revision: 1,
            ..lease.clone()
        },
        revision: Revision(5),
    };
    assert_eq!(decoded, expected);
    let forged = Lease {
        created_revision: 9,
        ..lease
    };
    assert!(
        !String::from_utf8(forged.encode_stored().unwrap())
            .unwrap()
            .contains("created-revision")
    );
    let forged = kv("/weft/leases/n1", &serde_json::to_string(&forged).unwrap());
    assert_eq!(decode::<Lease>(&forged).unwrap(), expected);
}

#[test]
fn bad_leases_are_corrupt_with_the_key_named() {
    for (value, reason) in [
        ("not json", "does not parse"),
        (
            "{\"node-name\": \"n1\", \"ipv4-cidr\": \"10.42.0.0/33\"}",
            "does not parse",
        ),
        (
            "{\"node-name\": \"n1\", \"ipv4-cidr\": \"fd00::/64\"}",
            "does not parse",
        ),
        ("{\"ipv4-cidr\": \"10.42.0.0/24\"}", "node-name"),
        ("{\"node-name\": \"n2\"}", "belongs at /weft/leases/n2"),
        (
            "{\"node-name\": \"n1\", \"backend\": {\"type\": \"carrier-pigeon\"}}",
            "does not parse",
        ),
    ] {
        let err = decode::<Lease>(&kv("/weft/leases/n1", value)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("corrupt lease at key /weft/leases/n1: "),
            "{message}"
        );
        assert!(message.contains(reason), "{value}: {message}");
    }
}

#[test]
fn lease_attrs_round_trip() {
    let attrs = LeaseAttrs {
        public_ipv4: Some([192, 0, 2, 7].into()),
        public_ipv6: Some("2001:db8::7".parse().unwrap()),
        backend: BackendData::HostGw,
    };
    let lease = attrs.lease("n7", NodeCidrs::default());
    assert_eq!(lease.node_name, "n7");
    assert_eq!(LeaseAttrs::of(&lease), attrs);
}

#[test]
fn defaults() {
    assert_eq!(
        NodeMaskSizes::default(),
        NodeMaskSizes { ipv4: 24, ipv6: 64 }
    );
    assert!(UnixTime::now() > UnixTime(1_600_000_000));
}
