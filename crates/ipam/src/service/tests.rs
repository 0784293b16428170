//! Tests of service IPs, defaults and mask-size limits.

use std::net::IpAddr;

use proptest::prelude::*;

use crate::{
    Cidr, CidrList, default_cidrs, default_cluster_dns, indexed_ip, kubernetes_service_ips,
    validate_node_mask_size, validate_service_cidrs,
};

fn list(s: &str) -> CidrList {
    CidrList::parse("service-cidr", &[s]).unwrap()
}

fn ips(v: Vec<IpAddr>) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn service_ips() {
    let dual = list("10.43.0.0/16,fd00:43::/112");
    assert_eq!(
        ips(kubernetes_service_ips(&dual).unwrap()),
        "10.43.0.1,fd00:43::1"
    );
    assert_eq!(
        ips(default_cluster_dns(&dual).unwrap()),
        "10.43.0.10,fd00:43::a"
    );
    let v6 = list("2001:cafe:43::/112");
    assert_eq!(ips(default_cluster_dns(&v6).unwrap()), "2001:cafe:43::a");
}

#[test]
fn indexed_ips() {
    let c: Cidr = "10.43.0.0/29".parse().unwrap();
    assert_eq!(indexed_ip(c, 7).unwrap().to_string(), "10.43.0.7");
    assert_eq!(
        indexed_ip(c, 10).unwrap_err().to_string(),
        "can't take the address at index 10 of 10.43.0.0/29: it holds only 8 addresses"
    );
    let all: Cidr = "::/0".parse().unwrap();
    assert_eq!(
        indexed_ip(all, u128::MAX).unwrap().to_string(),
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    let v4all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert_eq!(
        indexed_ip(v4all, u128::from(u32::MAX)).unwrap().to_string(),
        "255.255.255.255"
    );
    assert!(indexed_ip(v4all, 1 << 32).is_err());
}

fn check_service(s: &str, expect: &[&str]) {
    let got: Vec<String> = validate_service_cidrs("service-cidr", &list(s))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, expect, "input {s}");
}

#[test]
fn service_cidr_limits() {
    check_service("10.43.0.0/16,fd00:43::/112", &[]);
    check_service("10.32.0.0/12", &[]);
    check_service("10.43.0.0/28,fd00:43::/124", &[]);
    check_service(
        "10.0.0.0/8,fd00:43::/108",
        &[
            "service-cidr 10.0.0.0/8 is too large: the largest allowed IPv4 service CIDR is /12; use a prefix of /12 or longer",
            "service-cidr fd00:43::/108 is too large: the largest allowed IPv6 service CIDR is /112; use a prefix of /112 or longer",
        ],
    );
    check_service(
        "10.43.0.0/29",
        &[
            "service-cidr 10.43.0.0/29 is too small: it needs room for the cluster DNS address at index 10; use a prefix of /28 or shorter",
        ],
    );
    check_service(
        "fd00:43::/125",
        &[
            "service-cidr fd00:43::/125 is too small: it needs room for the cluster DNS address at index 10; use a prefix of /124 or shorter",
        ],
    );
}

#[test]
fn defaults() {
    let v4 = default_cidrs(Some("192.0.2.1".parse().unwrap()));
    assert_eq!(
        (v4.cluster.to_string(), v4.service.to_string()),
        ("10.42.0.0/16".into(), "10.43.0.0/16".into())
    );
    assert_eq!(default_cidrs(None), v4);
    let v6 = default_cidrs(Some("2001:db8::1".parse().unwrap()));
    assert_eq!(
        (v6.cluster.to_string(), v6.service.to_string()),
        ("fd00:42::/56".into(), "fd00:43::/112".into())
    );
    for d in [v4, v6] {
        assert!(validate_service_cidrs("service-cidr", &d.service).is_empty());
    }
}

#[test]
fn node_mask_sizes() {
    let v4: Cidr = "10.42.0.0/16".parse().unwrap();
    assert_eq!(
        validate_node_mask_size("node-cidr-mask-size-ipv4", v4, 24),
        Ok(24)
    );
    assert_eq!(
        validate_node_mask_size("node-cidr-mask-size-ipv4", v4, 16),
        Ok(16)
    );
    assert_eq!(
        validate_node_mask_size("node-cidr-mask-size-ipv4", v4, 32),
        Ok(32)
    );
    assert_eq!(
        validate_node_mask_size("node-cidr-mask-size-ipv4", v4, 8)
            .unwrap_err()
            .to_string(),
        "node-cidr-mask-size-ipv4 8 does not fit cluster-cidr 10.42.0.0/16: it must be between 16 and 32 (at least the cluster prefix and at most 16 bits longer)"
    );
    let v6: Cidr = "fd00:42::/56".parse().unwrap();
    assert_eq!(
        validate_node_mask_size("node-cidr-mask-size-ipv6", v6, 64),
        Ok(64)
    );
    assert_eq!(
        validate_node_mask_size("node-cidr-mask-size-ipv6", v6, 80)
            .unwrap_err()
            .to_string(),
        "node-cidr-mask-size-ipv6 80 does not fit cluster-cidr fd00:42::/56: it must be between 56 and 72 (at least the cluster prefix and at most 16 bits longer)"
    );
    let small: Cidr = "10.42.0.0/28".parse().unwrap();
    assert!(validate_node_mask_size("node-cidr-mask-size-ipv4", small, 32).is_ok());
    assert!(validate_node_mask_size("node-cidr-mask-size-ipv4", small, 33).is_err());
}

proptest! {
    /// Every valid index of a CIDR lies inside it, and the first invalid one is refused.
    #[test]
    fn indexed_ip_stays_inside(octets in any::<u32>(), len in 0u8..=32, index in any::<u64>()) {
        let host = 32 - u32::from(len);
        let net = if host == 32 { 0 } else { octets >> host << host };
        let cidr: Cidr = format!("{}/{len}", std::net::Ipv4Addr::from(net)).parse().unwrap();
        let size = 1u128 << host;
        let index = u128::from(index) % (size + 1);
        match indexed_ip(cidr, index) {
            Ok(ip) => { prop_assert!(index < size); prop_assert!(cidr.contains(ip)); }
            Err(_) => prop_assert_eq!(index, size),
        }
    }
}
