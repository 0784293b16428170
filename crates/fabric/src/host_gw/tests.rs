//! Tests of the host-gw backend.

use crate::vxlan::tests::{config, lease};
use crate::{HostGw, desired_state, plan};

#[test]
fn routes_via_peer_node_ips() {
    let desired = desired_state(
        &HostGw,
        &lease(1, true),
        &[lease(2, true)],
        &config("10.42.0.0/16,fd00:42::/56"),
    )
    .unwrap();
    let got: Vec<String> = plan(&Default::default(), &desired.state)
        .ops
        .iter()
        .map(ToString::to_string)
        .filter(|l| l.starts_with("ip route"))
        .collect();
    assert_eq!(
        got,
        [
            "ip route replace 10.42.2.0/24 via 192.0.2.2 dev eth0 proto 87",
            "ip route replace fd00:42:0:2::/64 via 2001:db8::2 dev eth0 proto 87",
        ]
    );
    assert!(desired.state.links.is_empty());
}

#[test]
fn non_adjacent_peer_is_reported_by_name() {
    let mut far = lease(3, false);
    far.public_ipv4 = Some("198.51.100.3".parse().unwrap());
    let desired = desired_state(
        &HostGw,
        &lease(1, false),
        &[lease(2, false), far],
        &config("10.42.0.0/16"),
    )
    .unwrap();
    assert_eq!(desired.state.routes.len(), 1);
    assert_eq!(
        desired
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "node node-3 is skipped: its address 198.51.100.3 is not on a network directly connected to eth0; host-gw requires every node on one layer-2 network (use vxlan or wireguard-native across routed networks)"
        ]
    );
}
