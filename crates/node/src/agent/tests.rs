//! Tests of what the agent takes from flannel-conf: the net-conf.json it writes and the VTEP
//! MAC prefix.

use serde_json::{Value, json};
use weft_config::ClusterNetwork;
use weft_fabric::MacAddr;

use super::{cleanup_scope, net_conf_file, net_conf_path, with_mac_prefix};

/// The cluster record of the static example (K3s's defaults, vxlan) with `net-conf` set to
/// `conf`.
fn cluster(conf: Value) -> ClusterNetwork {
    let example: Value =
        serde_json::from_str(include_str!("../../examples/static-leases.json")).unwrap();
    let mut record = example["cluster"].clone();
    record["net-conf"] = conf;
    ClusterNetwork::from_json(&record).unwrap()
}

#[test]
fn writes_the_net_conf_in_effect() {
    // Without flannel-conf: the one K3s derives.
    let (text, secret) = net_conf_file(&cluster(Value::Null)).unwrap();
    assert!(!secret);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"Network": "10.42.0.0/16", "EnableIPv4": true, "EnableIPv6": false,
            "IPv6Network": "::/0", "Backend": {"Type": "vxlan"}})
    );
    // With it: the servers' file, normalised.
    let (text, secret) = net_conf_file(&cluster(json!({
        "SubnetMin": "10.42.8.0",
        "Backend": {"Type": "vxlan", "MTU": 1400, "MacPrefix": "0E-2A"}
    })))
    .unwrap();
    assert!(!secret);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"SubnetMin": "10.42.8.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 0,
            "MTU": 1400, "GBP": false, "DirectRouting": false, "MacPrefix": "0E-2A"}})
    );
}

#[test]
fn mac_prefix_replaces_the_first_two_bytes() {
    let mac = MacAddr([0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
    assert_eq!(
        with_mac_prefix(mac, Some([0x0e, 0x2a])),
        MacAddr([0x0e, 0x2a, 0x56, 0x78, 0x9a, 0xbc])
    );
    assert_eq!(with_mac_prefix(mac, None), mac);
    let cluster = cluster(json!({"Backend": {"Type": "vxlan", "MacPrefix": "0E-2A"}}));
    assert_eq!(cluster.vxlan_options().mac_prefix, Some([0x0e, 0x2a]));
}

/// `weft-agent cleanup` removes the devices of the VNI the agent last wrote in its
/// net-conf.json, besides weft's usual ones.
#[test]
fn cleanup_covers_the_written_vni() {
    let dir = std::env::temp_dir().join(format!("weft-cleanup-scope-{}", std::process::id()));
    let settings = crate::agent::AgentSettings {
        dir: dir.clone(),
        node_name: "n1".into(),
        node_ips: Vec::new(),
        external_ips: Vec::new(),
        flannel_iface: None,
        subnet_file: dir.join("subnet.env"),
        cni_conf_dir: dir.join("cni"),
        flannel_cni_conf: None,
        masq_mode: weft_fabric::MasqMode::Nftables,
        reconcile_interval: std::time::Duration::from_secs(10),
        wireguard_implementation: None,
    };
    assert_eq!(cleanup_scope(&settings), weft_kernel::Scope::weft());
    let (text, _) =
        net_conf_file(&cluster(json!({"Backend": {"Type": "vxlan", "VNI": 4096}}))).unwrap();
    let path = net_conf_path(&settings);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    let scope = cleanup_scope(&settings);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        scope.links.contains(&"flannel.4096".to_owned()),
        "{scope:?}"
    );
    assert!(
        scope.links.contains(&"flannel-v6.4096".to_owned()),
        "{scope:?}"
    );
    assert!(scope.links.contains(&"flannel.1".to_owned()), "{scope:?}");
}
