//! Tests of the wireguard-native backend's desired state, its plans and its lease data.

use crate::vxlan::tests::{config, lease as vxlan_lease};
use crate::{
    Backend as _, BackendData, FabricError, Lease, Op, PeerProblemReason, WgImplementation,
    WgPublicKey, WireguardNative, desired_state, plan,
};

fn key(n: u8) -> WgPublicKey {
    WgPublicKey([n; 32])
}

/// Node `n` as the vxlan tests have it, publishing WireGuard key `n`.
fn lease(n: u8, dual: bool) -> Lease {
    Lease {
        backend: BackendData::Wireguard {
            public_key: key(n),
            port_ipv4: 51820,
            port_ipv6: 51821,
        },
        ..vxlan_lease(n, dual)
    }
}

fn backend(n: u8) -> WireguardNative {
    WireguardNative {
        public_key: key(n),
        implementation: WgImplementation::Userspace,
        keepalive: 25,
        listen_ports: (crate::wireguard::PORT_V4, crate::wireguard::PORT_V6),
        preshared_key: false,
        mode: crate::wireguard::WgMode::Separate,
    }
}

/// The plan from an empty kernel, without the firewall line.
fn fresh_plan(local: &Lease, peers: &[Lease], cluster: &str) -> String {
    fresh_lines(&backend(1), local, peers, cluster)
        .into_iter()
        .filter(|l| !l.starts_with("nft "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every line of `backend`'s plan from an empty kernel, for a cluster of `cluster`.
fn fresh_lines(
    backend: &WireguardNative,
    local: &Lease,
    peers: &[Lease],
    cluster: &str,
) -> Vec<String> {
    let desired = desired_state(backend, local, peers, &config(cluster)).unwrap();
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    plan(&Default::default(), &desired.state)
        .ops
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn ipv4_objects_in_order() {
    let k2 = key(2);
    let k3 = key(3);
    let k1 = key(1);
    assert_eq!(
        fresh_plan(
            &lease(1, false),
            &[lease(2, false), lease(3, false)],
            "10.42.0.0/16"
        ),
        format!(
            "sysctl -w net/ipv4/ip_forward=1\n\
             ip link add flannel-wg mtu 1420 up type wireguard (userspace) listen-port 51820 public-key {k1}\n\
             ip addr add 10.42.1.0/32 dev flannel-wg\n\
             wg set flannel-wg peer {k2} endpoint 192.0.2.2:51820 allowed-ips 10.42.2.0/24 persistent-keepalive 25\n\
             wg set flannel-wg peer {k3} endpoint 192.0.2.3:51820 allowed-ips 10.42.3.0/24 persistent-keepalive 25\n\
             ip route replace 10.42.0.0/16 dev flannel-wg scope link proto 87"
        )
    );
}

#[test]
fn dual_stack_has_a_device_per_family() {
    let (k1, k2) = (key(1), key(2));
    assert_eq!(
        fresh_plan(
            &lease(1, true),
            &[lease(2, true)],
            "10.42.0.0/16,fd00:42::/56"
        ),
        format!(
            "sysctl -w net/ipv4/ip_forward=1\n\
             sysctl -w net/ipv6/conf/all/forwarding=1\n\
             ip link add flannel-wg mtu 1420 up type wireguard (userspace) listen-port 51820 public-key {k1}\n\
             ip link add flannel-wg-v6 mtu 1420 up type wireguard (userspace) listen-port 51821 public-key {k1}\n\
             ip addr add 10.42.1.0/32 dev flannel-wg\n\
             ip addr add fd00:42:0:1::/128 dev flannel-wg-v6\n\
             wg set flannel-wg peer {k2} endpoint 192.0.2.2:51820 allowed-ips 10.42.2.0/24 persistent-keepalive 25\n\
             wg set flannel-wg-v6 peer {k2} endpoint [2001:db8::2]:51821 allowed-ips fd00:42:0:2::/64 persistent-keepalive 25\n\
             ip route replace 10.42.0.0/16 dev flannel-wg scope link proto 87\n\
             ip route replace fd00:42::/56 dev flannel-wg-v6 scope link proto 87"
        )
    );
}

#[test]
fn one_peer_changes_touch_only_that_peer() {
    let config = config("10.42.0.0/16");
    let desired = |peers: &[Lease]| {
        desired_state(&backend(1), &lease(1, false), peers, &config)
            .unwrap()
            .state
    };
    let before = desired(&[lease(2, false), lease(3, false)]);

    // Node 3 leaves: only its peer goes.
    let after = desired(&[lease(2, false)]);
    assert_eq!(
        plan(&before, &after).ops,
        [Op::DeleteWgPeer {
            dev: "flannel-wg".into(),
            public_key: key(3)
        }]
    );

    // Node 4 joins: only its peer comes.
    let after = desired(&[lease(2, false), lease(3, false), lease(4, false)]);
    let p = plan(&before, &after);
    assert_eq!(p.len(), 1, "{p}");
    assert!(matches!(&p.ops[0], Op::ReplaceWgPeer { public_key, .. } if *public_key == key(4)));

    // Node 2 moves to another address: its peer is replaced in place, nothing else.
    let mut moved = lease(2, false);
    moved.public_ipv4 = Some("192.0.2.22".parse().unwrap());
    let after = desired(&[moved, lease(3, false)]);
    assert_eq!(
        plan(&before, &after).to_string(),
        format!(
            "wg set flannel-wg peer {} endpoint 192.0.2.22:51820 allowed-ips 10.42.2.0/24 persistent-keepalive 25\n",
            key(2)
        )
    );

    // Node 2 gets a new key: the old peer goes, the new one comes.
    let mut rekeyed = lease(2, false);
    rekeyed.backend = BackendData::Wireguard {
        public_key: key(9),
        port_ipv4: 0,
        port_ipv6: 0,
    };
    let after = desired(&[rekeyed, lease(3, false)]);
    assert_eq!(
        plan(&before, &after).to_string(),
        format!(
            "wg set flannel-wg peer {} remove\n\
             wg set flannel-wg peer {} endpoint 192.0.2.2:51820 allowed-ips 10.42.2.0/24 persistent-keepalive 25\n",
            key(2),
            key(9)
        )
    );
}

#[test]
fn switching_backends_replaces_every_object() {
    let config = config("10.42.0.0/16");
    let vxlan = crate::Vxlan {
        mac_v4: crate::MacAddr([2, 0, 0, 0, 1, 4]),
        mac_v6: crate::MacAddr([2, 0, 0, 0, 1, 6]),
        settings: crate::VxlanSettings::default(),
    };
    let vx = desired_state(
        &vxlan,
        &vxlan_lease(1, false),
        &[vxlan_lease(2, false)],
        &config,
    )
    .unwrap()
    .state;
    let wg = desired_state(&backend(1), &lease(1, false), &[lease(2, false)], &config)
        .unwrap()
        .state;
    let to_wg = plan(&vx, &wg);
    let text = to_wg.to_string();
    // The link takes its neighbours, FDB entries and routes along.
    assert!(
        text.starts_with("ip link del flannel.1\nip link add flannel-wg "),
        "{text}"
    );
    let mut reached = vx.clone();
    reached.apply_plan(&to_wg);
    assert_eq!(reached, wg);
    let back = plan(&wg, &vx);
    assert!(
        back.to_string()
            .starts_with("ip link del flannel-wg\nip link add flannel.1 "),
        "{back}"
    );
    let mut reached = wg.clone();
    reached.apply_plan(&back);
    assert_eq!(reached, vx);

    // Another implementation, or another key, is another device.
    let mut kernel = backend(1);
    kernel.implementation = WgImplementation::Kernel;
    let wg_kernel = desired_state(&kernel, &lease(1, false), &[lease(2, false)], &config)
        .unwrap()
        .state;
    let p = plan(&wg, &wg_kernel);
    assert!(
        matches!(&p.ops[0], Op::DeleteLink { name } if name == "flannel-wg"),
        "{p}"
    );
    assert!(p.to_string().contains("type wireguard (kernel)"), "{p}");
}

#[test]
fn peers_without_a_key_or_address_are_reported() {
    let mut no_ip = lease(3, false);
    no_ip.public_ipv4 = None;
    let desired = desired_state(
        &backend(1),
        &lease(1, false),
        &[vxlan_lease(2, false), no_ip, lease(4, false)],
        &config("10.42.0.0/16"),
    )
    .unwrap();
    let problems: Vec<String> = desired.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "node node-2 is skipped: it published no WireGuard public key; every node must run the wireguard-native backend",
            "node node-3 is skipped: its lease has no IPv4 public address; set --node-ip (or --node-external-ip with flannel-external-ip) on that node",
        ]
    );
    assert_eq!(
        desired.problems[0].reason,
        PeerProblemReason::NoWireguardKey
    );
    assert_eq!(desired.state.wg_peers.len(), 1);
}

#[test]
fn keys_print_and_parse_as_base64() {
    let check = |bytes: [u8; 32], text: &str| {
        assert_eq!(WgPublicKey(bytes).to_string(), text);
        assert_eq!(text.parse::<WgPublicKey>().unwrap(), WgPublicKey(bytes));
    };
    check([0; 32], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    check([0xff; 32], "//////////////////////////////////////////8=");
    let mut counting = [0u8; 32];
    for (i, b) in counting.iter_mut().enumerate() {
        *b = u8::try_from(i).unwrap();
    }
    check(counting, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    for bad in [
        "",
        "AAAA",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH*8=",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh==",
    ] {
        assert_eq!(
            bad.parse::<WgPublicKey>(),
            Err(FabricError::InvalidWgKey {
                value: bad.to_owned()
            }),
            "{bad}"
        );
    }
}

#[test]
fn lease_json_round_trips() {
    let l = lease(2, false);
    let text = serde_json::to_string(&l.backend).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"type":"wireguard","public_key":"{}","port_ipv4":51820,"port_ipv6":51821}}"#,
            key(2)
        )
    );
    assert_eq!(
        serde_json::from_str::<Lease>(&serde_json::to_string(&l).unwrap()).unwrap(),
        l
    );
    let old = format!(r#"{{"type":"wireguard","public_key":"{}"}}"#, key(2));
    assert_eq!(
        serde_json::from_str::<BackendData>(&old).unwrap(),
        BackendData::Wireguard {
            public_key: key(2),
            port_ipv4: 0,
            port_ipv6: 0
        }
    );
    assert!(
        serde_json::from_str::<BackendData>(r#"{"type":"wireguard","public_key":"nope"}"#).is_err()
    );
}

#[test]
fn mtu_is_the_external_one_minus_80() {
    use crate::Backend as _;
    assert_eq!(backend(1).mtu(1500, weft_ipam::Family::Ipv4), 1420);
    assert_eq!(backend(1).mtu(1500, weft_ipam::Family::Ipv6), 1420);
    assert_eq!(backend(1).kind().to_string(), "wireguard-native");
}

/// flannel-conf's ListenPort/ListenPortV6, PersistentKeepaliveInterval and PSK: the devices
/// listen on the ports and publish them, every peer gets the keepalive and the pre-shared key,
/// which the plan names without showing it.
#[test]
fn ports_keepalive_and_preshared_key() {
    let backend = WireguardNative {
        keepalive: 5,
        listen_ports: (51000, 51001),
        preshared_key: true,
        mode: crate::wireguard::WgMode::Separate,
        ..backend(1)
    };
    assert_eq!(
        backend.backend_data(),
        BackendData::Wireguard {
            public_key: key(1),
            port_ipv4: 51000,
            port_ipv6: 51001,
        }
    );
    let mut peer = lease(2, true);
    peer.backend = BackendData::Wireguard {
        public_key: key(2),
        port_ipv4: 51000,
        port_ipv6: 51001,
    };
    let got: Vec<String> = fresh_lines(
        &backend,
        &lease(1, true),
        &[peer],
        "10.42.0.0/16,fd00:42::/56",
    )
    .into_iter()
    .filter(|l| l.starts_with("ip link add") || l.starts_with("wg set"))
    .collect();
    let k1 = key(1);
    let k2 = key(2);
    assert_eq!(
        got,
        [
            format!(
                "ip link add flannel-wg mtu 1420 up type wireguard (userspace) listen-port 51000 public-key {k1}"
            ),
            format!(
                "ip link add flannel-wg-v6 mtu 1420 up type wireguard (userspace) listen-port 51001 public-key {k1}"
            ),
            format!(
                "wg set flannel-wg peer {k2} endpoint 192.0.2.2:51000 allowed-ips 10.42.2.0/24 persistent-keepalive 5 preshared-key <redacted>"
            ),
            format!(
                "wg set flannel-wg-v6 peer {k2} endpoint [2001:db8::2]:51001 allowed-ips fd00:42:0:2::/64 persistent-keepalive 5 preshared-key <redacted>"
            ),
        ]
    );
}

/// Modes auto, ipv4 and ipv6: one device, `flannel-wg` on the first port, holds both
/// families' addresses and cluster routes and one peer per node with both pod CIDRs; the mode
/// picks the endpoint's family, auto as flannel's selectMode does.
#[test]
fn single_device_modes() {
    let k1 = key(1);
    let k2 = key(2);
    let plan_of = |mode: crate::WgMode, peer: Lease| {
        let backend = WireguardNative {
            mode,
            listen_ports: (51000, 51001),
            ..backend(1)
        };
        fresh_lines(
            &backend,
            &lease(1, true),
            &[peer],
            "10.42.0.0/16,fd00:42::/56",
        )
        .into_iter()
        .filter(|l| !l.starts_with("nft ") && !l.starts_with("sysctl"))
        .collect::<Vec<_>>()
    };
    let mut peer = lease(2, true);
    peer.backend = BackendData::Wireguard {
        public_key: k2,
        port_ipv4: 51000,
        port_ipv6: 51000,
    };
    assert_eq!(
        plan_of(crate::WgMode::Auto, peer.clone()),
        [
            format!(
                "ip link add flannel-wg mtu 1420 up type wireguard (userspace) listen-port 51000 public-key {k1}"
            ),
            "ip addr add 10.42.1.0/32 dev flannel-wg".to_owned(),
            "ip addr add fd00:42:0:1::/128 dev flannel-wg".to_owned(),
            format!(
                "wg set flannel-wg peer {k2} endpoint 192.0.2.2:51000 allowed-ips 10.42.2.0/24,fd00:42:0:2::/64 persistent-keepalive 25"
            ),
            "ip route replace 10.42.0.0/16 dev flannel-wg scope link proto 87".to_owned(),
            "ip route replace fd00:42::/56 dev flannel-wg scope link proto 87".to_owned(),
        ]
    );
    let ipv6 = plan_of(crate::WgMode::Ipv6, peer.clone());
    assert!(
        ipv6.contains(&format!("wg set flannel-wg peer {k2} endpoint [2001:db8::2]:51000 allowed-ips 10.42.2.0/24,fd00:42:0:2::/64 persistent-keepalive 25")),
        "{ipv6:?}"
    );
    // auto: a peer whose IPv4 address is private but whose IPv6 one is public is reached over
    // IPv6; without an IPv6 address, over IPv4.
    peer.public_ipv4 = Some("10.0.0.2".parse().unwrap());
    let auto = plan_of(crate::WgMode::Auto, peer.clone());
    assert!(
        auto.iter()
            .any(|l| l.contains("endpoint [2001:db8::2]:51000")),
        "{auto:?}"
    );
    peer.public_ipv6 = None;
    let backend = WireguardNative {
        mode: crate::WgMode::Auto,
        ..backend(1)
    };
    assert_eq!(
        backend.endpoint_family(&lease(1, true), &peer),
        weft_ipam::Family::Ipv4
    );
    // One device: both families publish its port.
    assert_eq!(
        WireguardNative {
            mode: crate::WgMode::Auto,
            listen_ports: (51000, 51001),
            ..backend
        }
        .backend_data(),
        BackendData::Wireguard {
            public_key: k1,
            port_ipv4: 51000,
            port_ipv6: 51000,
        }
    );
}
