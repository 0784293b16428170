//! Tests of CIDR parsing, CIDR lists and family checks.

use std::net::IpAddr;

use proptest::prelude::*;

use crate::{Cidr, CidrList, Family, IpFamilies, check_same_families, ip_families, parse_ip_list};

/// Parses `values` as `--cluster-cidr` and renders the result or the error message.
fn check(values: &[&str], expect: &str) {
    let got = match CidrList::parse("cluster-cidr", values) {
        Ok(list) => format!("ok {list} ({})", list.families()),
        Err(e) => e.to_string(),
    };
    assert_eq!(got, expect, "input {values:?}");
}

#[test]
fn cidr_lists() {
    check(&["10.42.0.0/16"], "ok 10.42.0.0/16 (IPv4)");
    check(&["fd00:42::/56"], "ok fd00:42::/56 (IPv6)");
    check(
        &["10.42.0.0/16,fd00:42::/56"],
        "ok 10.42.0.0/16,fd00:42::/56 (dual-stack)",
    );
    check(
        &["10.42.0.0/16", "fd00:42::/56"],
        "ok 10.42.0.0/16,fd00:42::/56 (dual-stack)",
    );
    check(
        &[" fd00:42::/56 , 10.42.0.0/16 "],
        "ok fd00:42::/56,10.42.0.0/16 (dual-stack)",
    );
    check(&["10.42.0.0/16,"], "ok 10.42.0.0/16 (IPv4)");
    check(&["0.0.0.0/0"], "ok 0.0.0.0/0 (IPv4)");
    check(&["::/0"], "ok ::/0 (IPv6)");
    check(&["10.42.0.1/32"], "ok 10.42.0.1/32 (IPv4)");
}

#[test]
fn cidr_list_errors() {
    check(
        &[],
        "cluster-cidr is empty: give one CIDR, or two (one IPv4 and one IPv6) for dual-stack",
    );
    check(
        &[" , "],
        "cluster-cidr is empty: give one CIDR, or two (one IPv4 and one IPv6) for dual-stack",
    );
    check(
        &["10.42.1.0/16"],
        "invalid cluster-cidr 10.42.1.0/16: host bits are set; use 10.42.0.0/16",
    );
    check(
        &["fd00:42::1/56"],
        "invalid cluster-cidr fd00:42::1/56: host bits are set; use fd00:42::/56",
    );
    check(
        &["10.42.0.0"],
        "invalid cluster-cidr \"10.42.0.0\": the /PREFIX is missing; write a network as ADDRESS/PREFIX, e.g. 10.42.0.0/16 or fd00:42::/56",
    );
    check(
        &["10.42/16"],
        "invalid cluster-cidr \"10.42/16\": the address part is not an IP address; write a network as ADDRESS/PREFIX, e.g. 10.42.0.0/16 or fd00:42::/56",
    );
    check(
        &["10.42.0.0/33"],
        "invalid cluster-cidr \"10.42.0.0/33\": the prefix must be a number from 0 to 32; write a network as ADDRESS/PREFIX, e.g. 10.42.0.0/16 or fd00:42::/56",
    );
    check(
        &["fd00::/+64"],
        "invalid cluster-cidr \"fd00::/+64\": the prefix must be a number from 0 to 128; write a network as ADDRESS/PREFIX, e.g. 10.42.0.0/16 or fd00:42::/56",
    );
    check(
        &["fe80::%eth0/64"],
        "invalid cluster-cidr \"fe80::%eth0/64\": the address part is not an IP address; write a network as ADDRESS/PREFIX, e.g. 10.42.0.0/16 or fd00:42::/56",
    );
    check(
        &["10.42.0.0/16,10.44.0.0/16"],
        "cluster-cidr 10.42.0.0/16,10.44.0.0/16 has two IPv4 entries: a dual-stack list needs one IPv4 and one IPv6 entry",
    );
    check(
        &["10.42.0.0/16,fd00::/56,10.44.0.0/16"],
        "cluster-cidr 10.42.0.0/16,fd00::/56,10.44.0.0/16 has 3 entries: give one, or two (one IPv4 and one IPv6) for dual-stack",
    );
}

#[test]
fn list_accessors() {
    let list = CidrList::parse("service-cidr", &["fd00:43::/112,10.43.0.0/16"]).unwrap();
    assert_eq!(list.primary().family(), Family::Ipv6);
    assert_eq!(
        list.families(),
        IpFamilies::DualStack {
            primary: Family::Ipv6
        }
    );
    assert_eq!(list.ipv4().unwrap().to_string(), "10.43.0.0/16");
    assert_eq!(list.ipv6().unwrap().to_string(), "fd00:43::/112");
    assert_eq!(list.get(Family::Ipv4).map(|c| c.prefix_len()), Some(16));
    assert_eq!(list.iter().count(), 2);
}

#[test]
fn ip_lists() {
    let ips = parse_ip_list("node-ip", &["192.0.2.1, 2001:db8::1", ""]).unwrap();
    assert_eq!(
        ips,
        [
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(
        ip_families(&ips),
        Some(IpFamilies::DualStack {
            primary: Family::Ipv4
        })
    );
    assert_eq!(ip_families(&ips[1..]), Some(IpFamilies::Ipv6));
    assert_eq!(ip_families(&[]), None);
    assert_eq!(
        parse_ip_list("node-ip", &["192.0.2.300"])
            .unwrap_err()
            .to_string(),
        "invalid node-ip \"192.0.2.300\": not an IP address; write e.g. 192.168.1.10 or 2001:db8::10"
    );
}

#[test]
fn family_checks() {
    let dual = IpFamilies::DualStack {
        primary: Family::Ipv4,
    };
    let dual6 = IpFamilies::DualStack {
        primary: Family::Ipv6,
    };
    assert_eq!(
        check_same_families("cluster-cidr", dual, "service-cidr", dual6),
        Ok(())
    );
    assert_eq!(
        check_same_families(
            "cluster-cidr",
            IpFamilies::Ipv6,
            "service-cidr",
            IpFamilies::Ipv6
        ),
        Ok(())
    );
    assert_eq!(
        check_same_families("cluster-cidr", dual, "service-cidr", IpFamilies::Ipv4)
            .unwrap_err()
            .to_string(),
        "cluster-cidr and service-cidr must share the same IP version (IPv4, IPv6 or dual-stack): cluster-cidr is dual-stack, service-cidr is IPv4"
    );
    assert_eq!(
        check_same_families(
            "cluster-cidr",
            IpFamilies::Ipv4,
            "node-ip",
            IpFamilies::Ipv6
        )
        .unwrap_err()
        .to_string(),
        "cluster-cidr and node-ip must share the same IP version (IPv4, IPv6 or dual-stack): cluster-cidr is IPv4, node-ip is IPv6"
    );
}

#[test]
fn containment() {
    let cluster: Cidr = "10.42.0.0/16".parse().unwrap();
    assert!(cluster.contains("10.42.255.255".parse().unwrap()));
    assert!(!cluster.contains("10.43.0.0".parse().unwrap()));
    assert!(!cluster.contains("::".parse().unwrap()));
    assert!(cluster.contains_cidr("10.42.3.0/24".parse().unwrap()));
    assert!(!cluster.contains_cidr("10.0.0.0/8".parse().unwrap()));
}

proptest! {
    /// Any address with any prefix either parses to a network that contains it, or is refused
    /// with the network address to use instead.
    #[test]
    fn parse_is_strict_and_round_trips(addr in any::<IpAddr>(), len in 0u8..=128) {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let text = format!("{addr}/{len}");
        match Cidr::parse("cluster-cidr", &text) {
            Ok(c) => {
                prop_assert!(len <= max);
                prop_assert_eq!(c.network(), addr);
                prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
            }
            Err(crate::IpamError::HostBitsSet { network, .. }) => {
                prop_assert!(network.contains(addr));
                prop_assert_eq!(network.prefix_len(), len);
                prop_assert!(network.network() != addr);
            }
            Err(_) => prop_assert!(len > max),
        }
    }
}
