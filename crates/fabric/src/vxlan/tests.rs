//! Tests of the vxlan backend's desired state.

use weft_ipam::CidrList;

use crate::{
    BackendData, ExternalInterface, FabricConfig, FabricError, Lease, MacAddr, MasqMode,
    PeerProblemReason, Vxlan, desired_state, plan,
};

pub(crate) fn config(cluster: &str) -> FabricConfig {
    FabricConfig {
        cluster: CidrList::parse("cluster-cidr", &[cluster]).unwrap(),
        ipv6_masq: false,
        masq_mode: MasqMode::Nftables,
        fully_random: true,
        external: ExternalInterface {
            name: "eth0".into(),
            mtu: 1500,
            onlink: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/64".parse().unwrap(),
            ],
            addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        },
    }
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, n, 4])
}

fn mac6(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, n, 6])
}

/// Node `n`: pod CIDRs 10.42.n.0/24 and fd00:42:0:n::/64, node IPs 192.0.2.n and 2001:db8::n.
pub(crate) fn lease(n: u8, dual: bool) -> Lease {
    Lease {
        node_name: format!("node-{n}"),
        ipv4_cidr: Some(format!("10.42.{n}.0/24").parse().unwrap()),
        ipv6_cidr: dual.then(|| format!("fd00:42:0:{n}::/64").parse().unwrap()),
        public_ipv4: Some(format!("192.0.2.{n}").parse().unwrap()),
        public_ipv6: dual.then(|| format!("2001:db8::{n}").parse().unwrap()),
        backend: BackendData::Vxlan {
            vtep_mac_ipv4: Some(mac(n)),
            vtep_mac_ipv6: dual.then(|| mac6(n)),
        },
        created_revision: 0,
    }
}

fn backend(n: u8) -> Vxlan {
    Vxlan {
        mac_v4: mac(n),
        mac_v6: mac6(n),
        settings: crate::VxlanSettings::default(),
    }
}

/// The plan from an empty kernel, without the firewall line (tested in the firewall module).
fn fresh_plan(local: &Lease, peers: &[Lease], config: &FabricConfig) -> String {
    fresh_lines(&backend(1), local, peers, config, &["nft "]).join("\n")
}

/// The lines of `backend`'s plan from an empty kernel, less those starting with any of
/// `left_out`.
fn fresh_lines(
    backend: &Vxlan,
    local: &Lease,
    peers: &[Lease],
    config: &FabricConfig,
    left_out: &[&str],
) -> Vec<String> {
    let desired = desired_state(backend, local, peers, config).unwrap();
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    plan(&Default::default(), &desired.state)
        .ops
        .iter()
        .map(ToString::to_string)
        .filter(|l| !left_out.iter().any(|prefix| l.starts_with(prefix)))
        .collect()
}

#[test]
fn ipv4_objects_in_order() {
    let got = fresh_plan(
        &lease(1, false),
        &[lease(2, false), lease(3, false)],
        &config("10.42.0.0/16"),
    );
    assert_eq!(
        got,
        "sysctl -w net/ipv4/ip_forward=1\n\
         ip link add flannel.1 mtu 1450 up type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning address 02:00:00:00:01:04\n\
         ip addr add 10.42.1.0/32 dev flannel.1\n\
         ip neigh replace 10.42.2.0 lladdr 02:00:00:00:02:04 dev flannel.1 nud permanent\n\
         ip neigh replace 10.42.3.0 lladdr 02:00:00:00:03:04 dev flannel.1 nud permanent\n\
         bridge fdb replace 02:00:00:00:02:04 dev flannel.1 dst 192.0.2.2 self permanent\n\
         bridge fdb replace 02:00:00:00:03:04 dev flannel.1 dst 192.0.2.3 self permanent\n\
         ip route replace 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink proto 87\n\
         ip route replace 10.42.3.0/24 via 10.42.3.0 dev flannel.1 onlink proto 87"
    );
}

#[test]
fn dual_stack_has_a_device_per_family_with_its_own_mtu() {
    let got = fresh_plan(
        &lease(1, true),
        &[lease(2, true)],
        &config("10.42.0.0/16,fd00:42::/56"),
    );
    assert_eq!(
        got,
        "sysctl -w net/ipv4/ip_forward=1\n\
         sysctl -w net/ipv6/conf/all/forwarding=1\n\
         ip link add flannel-v6.1 mtu 1430 up type vxlan id 1 local 2001:db8::1 dev eth0 dstport 8472 nolearning address 02:00:00:00:01:06\n\
         ip link add flannel.1 mtu 1450 up type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning address 02:00:00:00:01:04\n\
         ip addr add fd00:42:0:1::/128 dev flannel-v6.1\n\
         ip addr add 10.42.1.0/32 dev flannel.1\n\
         ip neigh replace fd00:42:0:2:: lladdr 02:00:00:00:02:06 dev flannel-v6.1 nud permanent\n\
         ip neigh replace 10.42.2.0 lladdr 02:00:00:00:02:04 dev flannel.1 nud permanent\n\
         bridge fdb replace 02:00:00:00:02:06 dev flannel-v6.1 dst 2001:db8::2 self permanent\n\
         bridge fdb replace 02:00:00:00:02:04 dev flannel.1 dst 192.0.2.2 self permanent\n\
         ip route replace 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink proto 87\n\
         ip route replace fd00:42:0:2::/64 via fd00:42:0:2:: dev flannel-v6.1 onlink proto 87"
    );
}

#[test]
fn changed_peer_mac_updates_neighbour_and_fdb_and_drops_the_old_entry() {
    let config = config("10.42.0.0/16");
    let before = desired_state(&backend(1), &lease(1, false), &[lease(2, false)], &config)
        .unwrap()
        .state;
    let mut moved = lease(2, false);
    moved.backend = BackendData::Vxlan {
        vtep_mac_ipv4: Some(mac(9)),
        vtep_mac_ipv6: None,
    };
    let after = desired_state(&backend(1), &lease(1, false), &[moved], &config)
        .unwrap()
        .state;
    assert_eq!(
        plan(&before, &after).to_string(),
        "bridge fdb del 02:00:00:00:02:04 dev flannel.1 dst 192.0.2.2 self\n\
         ip neigh replace 10.42.2.0 lladdr 02:00:00:00:09:04 dev flannel.1 nud permanent\n\
         bridge fdb replace 02:00:00:00:09:04 dev flannel.1 dst 192.0.2.2 self permanent\n"
    );
}

#[test]
fn removed_peer_loses_every_object() {
    let config = config("10.42.0.0/16");
    let before = desired_state(
        &backend(1),
        &lease(1, false),
        &[lease(2, false), lease(3, false)],
        &config,
    )
    .unwrap()
    .state;
    let after = desired_state(&backend(1), &lease(1, false), &[lease(2, false)], &config)
        .unwrap()
        .state;
    assert_eq!(
        plan(&before, &after).to_string(),
        "ip route del 10.42.3.0/24 via 10.42.3.0 dev flannel.1 proto 87\n\
         ip neigh del 10.42.3.0 dev flannel.1\n\
         bridge fdb del 02:00:00:00:03:04 dev flannel.1 dst 192.0.2.3 self\n"
    );
}

/// The `local` address of node 1's `flannel.1` when its public IP is `public` and `eth0` holds
/// `addresses`.
fn vtep_local(public: &str, addresses: &[&str]) -> String {
    let mut local = lease(1, false);
    local.public_ipv4 = Some(public.parse().unwrap());
    let mut config = config("10.42.0.0/16");
    config.external.addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
    let desired = desired_state(&backend(1), &local, &[], &config).unwrap();
    match desired.state.links["flannel.1"].kind {
        crate::LinkKind::Vxlan { local, .. } => local.to_string(),
        ref other => panic!("flannel.1 is {other:?}"),
    }
}

#[test]
fn an_external_ip_the_node_holds_is_the_vtep_local_address() {
    assert_eq!(
        vtep_local("198.51.100.1", &["192.0.2.1", "198.51.100.1"]),
        "198.51.100.1"
    );
    // Nothing known about the interface: the public IP, as before addresses were observed.
    assert_eq!(vtep_local("198.51.100.1", &[]), "198.51.100.1");
}

#[test]
fn a_nated_external_ip_is_not_the_vtep_local_address() {
    // flannel-external-ip with a NAT's address: peers send there, the VTEP sends from eth0's
    // own IPv4 address (flannel's IfaceAddr), since the kernel sends nothing from an address
    // the node does not have.
    assert_eq!(
        vtep_local("198.51.100.1", &["2001:db8::1", "192.0.2.1", "192.0.2.9"]),
        "192.0.2.1"
    );
    // No address of the family on the interface: the public IP, and the kernel says why.
    assert_eq!(vtep_local("198.51.100.1", &["2001:db8::1"]), "198.51.100.1");
}

#[test]
fn peers_without_data_are_reported_not_fatal() {
    let mut no_mac = lease(2, false);
    no_mac.backend = BackendData::HostGw;
    let mut no_ip = lease(3, false);
    no_ip.public_ipv4 = None;
    let mut dup = lease(4, false);
    dup.ipv4_cidr = lease(1, false).ipv4_cidr;
    let desired = desired_state(
        &backend(1),
        &lease(1, false),
        &[no_mac, no_ip, dup, lease(5, false)],
        &config("10.42.0.0/16"),
    )
    .unwrap();
    let problems: Vec<String> = desired.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "node node-4 is skipped: its pod CIDR 10.42.1.0/24 is already held by node node-1, and a node may not take another's traffic; give node-4 its own or delete it (weft-server node delete node-4)",
            "node node-2 is skipped: it published no IPv4 VTEP MAC; every node must run the vxlan backend",
            "node node-3 is skipped: its lease has no IPv4 public address; set --node-ip (or --node-external-ip with flannel-external-ip) on that node",
        ]
    );
    assert!(matches!(
        desired.problems[1].reason,
        PeerProblemReason::NoVtepMac { .. }
    ));
    assert_eq!(desired.state.routes.len(), 1);
}

#[test]
fn local_lease_errors() {
    let mut local = lease(1, false);
    local.public_ipv4 = None;
    assert_eq!(
        desired_state(&backend(1), &local, &[], &config("10.42.0.0/16"))
            .unwrap_err()
            .to_string(),
        "the vxlan backend needs an IPv4 address on this node; set --node-ip (or --node-external-ip with flannel-external-ip)"
    );
    assert_eq!(
        desired_state(
            &backend(1),
            &lease(1, false),
            &[],
            &config("10.42.0.0/16,fd00:42::/56")
        )
        .unwrap_err(),
        FabricError::LeaseMissingFamily {
            node: "node-1".into(),
            family: weft_ipam::Family::Ipv6
        }
    );
    assert_eq!(
        desired_state(&backend(1), &lease(1, false), &[], &config("10.43.0.0/16"))
            .unwrap_err()
            .to_string(),
        "the lease of node node-1 has pod CIDR 10.42.1.0/24 outside cluster-cidr 10.43.0.0/16; delete the node so it gets a new lease"
    );
}

#[test]
fn none_backend_wants_nothing() {
    let desired = desired_state(
        &crate::NoBackend,
        &lease(1, false),
        &[lease(2, false)],
        &config("10.42.0.0/16"),
    )
    .unwrap();
    assert_eq!(desired.state.object_count(), 0);
}

#[test]
fn lease_json_round_trips() {
    let l = lease(2, true);
    let text = serde_json::to_string(&l).unwrap();
    assert_eq!(
        text,
        r#"{"node-name":"node-2","ipv4-cidr":"10.42.2.0/24","ipv6-cidr":"fd00:42:0:2::/64","public-ipv4":"192.0.2.2","public-ipv6":"2001:db8::2","backend":{"type":"vxlan","vtep_mac_ipv4":"02:00:00:00:02:04","vtep_mac_ipv6":"02:00:00:00:02:06"}}"#
    );
    assert_eq!(serde_json::from_str::<Lease>(&text).unwrap(), l);
    assert!(
        serde_json::from_str::<Lease>(r#"{"node-name":"x","ipv4-cidr":"10.42.2.1/24"}"#).is_err()
    );
    assert_eq!(
        "02:AA:00:00:00:01".parse::<MacAddr>().unwrap().to_string(),
        "02:aa:00:00:00:01"
    );
    assert!("02:aa:00:00:00".parse::<MacAddr>().is_err());
    assert!("02:aa:00:00:00:01:02".parse::<MacAddr>().is_err());
    assert!(MacAddr::local_from([0xff; 6]).is_local_unicast());
}

/// flannel-conf's VNI, Port and GBP: the devices are `flannel.VNI`, with that id, port and
/// the gbp flag; and MTU stands for the external interface's.
#[test]
fn vni_port_and_gbp_name_and_shape_the_devices() {
    let settings = crate::VxlanSettings {
        vni: 4096,
        port: 4789,
        gbp: true,
        direct_routing: false,
    };
    let backend = Vxlan {
        settings,
        ..backend(1)
    };
    let mut config = config("10.42.0.0/16");
    config.external.mtu = 1400;
    let got = fresh_lines(
        &backend,
        &lease(1, false),
        &[lease(2, false)],
        &config,
        &["nft ", "sysctl"],
    );
    assert_eq!(
        got,
        [
            "ip link add flannel.4096 mtu 1350 up type vxlan id 4096 local 192.0.2.1 dev eth0 dstport 4789 gbp nolearning address 02:00:00:00:01:04",
            "ip addr add 10.42.1.0/32 dev flannel.4096",
            "ip neigh replace 10.42.2.0 lladdr 02:00:00:00:02:04 dev flannel.4096 nud permanent",
            "bridge fdb replace 02:00:00:00:02:04 dev flannel.4096 dst 192.0.2.2 self permanent",
            "ip route replace 10.42.2.0/24 via 10.42.2.0 dev flannel.4096 onlink proto 87",
        ]
    );
}

/// DirectRouting: a peer on a network the external interface reaches directly gets a route via
/// its address on that interface and no tunnel objects; one behind a router gets the tunnel.
#[test]
fn direct_routing_routes_on_link_peers_directly() {
    let backend = Vxlan {
        settings: crate::VxlanSettings {
            direct_routing: true,
            ..crate::VxlanSettings::default()
        },
        ..backend(1)
    };
    let mut routed = lease(3, false);
    routed.public_ipv4 = Some("198.51.100.3".parse().unwrap());
    let got = fresh_lines(
        &backend,
        &lease(1, false),
        &[lease(2, false), routed],
        &config("10.42.0.0/16"),
        &["nft ", "sysctl"],
    );
    assert_eq!(
        got,
        [
            "ip link add flannel.1 mtu 1450 up type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning address 02:00:00:00:01:04",
            "ip addr add 10.42.1.0/32 dev flannel.1",
            "ip neigh replace 10.42.3.0 lladdr 02:00:00:00:03:04 dev flannel.1 nud permanent",
            "bridge fdb replace 02:00:00:00:03:04 dev flannel.1 dst 198.51.100.3 self permanent",
            "ip route replace 10.42.2.0/24 via 192.0.2.2 dev eth0 proto 87",
            "ip route replace 10.42.3.0/24 via 10.42.3.0 dev flannel.1 onlink proto 87",
        ]
    );
}
