//! Tests of the route-table parsers behind `OsHost` (the rest of `OsHost` reads the real host,
//! which unit tests never do).

use super::{default_ipv4_route_interface, default_ipv6_route_interface};

const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t010011AC\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

#[test]
fn ipv4_default_route_with_lowest_metric() {
    assert_eq!(default_ipv4_route_interface(ROUTE).as_deref(), Some("eth0"));
}

#[test]
fn ipv4_without_default_route() {
    let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\neth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
    assert_eq!(default_ipv4_route_interface(text), None);
    assert_eq!(default_ipv4_route_interface(""), None);
}

#[test]
fn ipv6_default_route_skips_lo_and_unreachable() {
    assert_eq!(
        default_ipv6_route_interface(IPV6_ROUTE).as_deref(),
        Some("eth0")
    );
    let only_lo = IPV6_ROUTE.lines().last().unwrap();
    assert_eq!(default_ipv6_route_interface(only_lo), None);
}
