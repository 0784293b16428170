//! Unit tests of the key layout.

use super::*;

#[track_caller]
fn round_trip(cidr: &str, key: &str) {
    let cidr = Cidr::parse("test", cidr).unwrap();
    assert_eq!(subnet(cidr), key);
    assert_eq!(parse_subnet(key).unwrap(), cidr);
}

#[test]
fn subnet_keys_round_trip() {
    round_trip("10.42.3.0/24", "/weft/subnets/ipv4/10.42.3.0-24");
    round_trip("10.42.0.128/25", "/weft/subnets/ipv4/10.42.0.128-25");
    round_trip("fd00:42:0:3::/64", "/weft/subnets/ipv6/fd00:42:0:3::-64");
    round_trip("2001:db8::/56", "/weft/subnets/ipv6/2001:db8::-56");
}

#[test]
fn bad_subnet_keys_name_the_key() {
    for (key, reason) in [
        ("/weft/leases/n1", "not under /weft/subnets/"),
        ("/weft/subnets/10.42.0.0-24", "expected <family>"),
        (
            "/weft/subnets/ipv4/10.42.0.0",
            "expected <address>-<prefix>",
        ),
        ("/weft/subnets/ipv4/10.42.0.0-x", "not a number"),
        ("/weft/subnets/ipv4/10.42.0.1-24", "not a network address"),
        ("/weft/subnets/ipv4/fd00::-64", "not an IPv4 address"),
        ("/weft/subnets/ipv6/10.42.0.0-24", "not an IPv6 address"),
        ("/weft/subnets/ipv5/10.42.0.0-24", "neither ipv4 nor ipv6"),
        ("/weft/subnets/ipv4/10.42.0.0-33", "not a network address"),
    ] {
        let err = parse_subnet(key).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(key), "{message}");
        assert!(message.contains(reason), "{key}: {message}");
    }
}

#[test]
fn record_keys() {
    assert_eq!(node("n1"), "/weft/nodes/n1");
    assert_eq!(lease("n1"), "/weft/leases/n1");
    assert_eq!(
        pod("kube-system", "coredns"),
        "/weft/pods/kube-system/coredns"
    );
    for prefix in [NODES, LEASES, SUBNETS, PODS, CLUSTER_CONFIG] {
        assert!(prefix.starts_with(ROOT));
    }
}

#[test]
fn names_must_fit_in_one_key_segment() {
    for good in [
        "n1",
        "node-1.example.com",
        "UPPER",
        "x".repeat(253).as_str(),
    ] {
        assert!(check_name("node name", good).is_ok(), "{good}");
    }
    for (bad, reason) in [
        ("", "empty"),
        ("a/b", "'/'"),
        (".", "'.' or '..'"),
        ("..", "'.' or '..'"),
        ("a\nb", "control character"),
        ("x".repeat(254).as_str(), "longer than 253"),
    ] {
        let message = check_name("node name", bad).unwrap_err().to_string();
        assert!(message.contains("invalid node name"), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

#[test]
fn prefix_ends() {
    assert_eq!(prefix_end("/weft/"), b"/weft0");
    assert_eq!(prefix_end("a"), b"b");
    assert_eq!(prefix_end(""), b"\0");
}
