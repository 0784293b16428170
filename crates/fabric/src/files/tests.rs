//! Tests of subnet.env and the CNI conflist.

use weft_ipam::CidrList;

use crate::files::{cni_conflist, subnet_env};
use crate::vxlan::tests::lease;

#[test]
fn subnet_env_in_flannels_format() {
    let cluster = CidrList::parse("cluster-cidr", &["10.42.0.0/16,fd00:42::/56"]).unwrap();
    assert_eq!(
        subnet_env(&cluster, &lease(1, true), 1430),
        "FLANNEL_NETWORK=10.42.0.0/16\n\
         FLANNEL_SUBNET=10.42.1.1/24\n\
         FLANNEL_IPV6_NETWORK=fd00:42::/56\n\
         FLANNEL_IPV6_SUBNET=fd00:42:0:1::1/64\n\
         FLANNEL_MTU=1430\n\
         FLANNEL_IPMASQ=true\n"
    );
    let v4 = CidrList::parse("cluster-cidr", &["10.42.0.0/16"]).unwrap();
    assert_eq!(
        subnet_env(&v4, &lease(2, false), 1450),
        "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
}

#[test]
fn conflist_runs_bridge_host_local_portmap_and_bandwidth() {
    let text = cni_conflist(&lease(1, true), 1430, "/var/lib/weft/agent/cni");
    let conf: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(conf["cniVersion"], "1.0.0");
    assert_eq!(conf["name"], "weft");
    let bridge = &conf["plugins"][0];
    assert_eq!(bridge["type"], "bridge");
    assert_eq!(bridge["bridge"], "cni0");
    assert_eq!(bridge["isGateway"], true);
    assert_eq!(bridge["isDefaultGateway"], true);
    assert_eq!(bridge["ipMasq"], false);
    assert_eq!(bridge["mtu"], 1430);
    assert_eq!(bridge["ipam"]["type"], "host-local");
    assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/weft/agent/cni");
    assert_eq!(
        bridge["ipam"]["ranges"],
        serde_json::json!([
            [{"subnet": "10.42.1.0/24", "gateway": "10.42.1.1"}],
            [{"subnet": "fd00:42:0:1::/64", "gateway": "fd00:42:0:1::1"}]
        ])
    );
    assert_eq!(conf["plugins"][1]["type"], "portmap");
    assert_eq!(conf["plugins"][1]["capabilities"]["portMappings"], true);
    assert_eq!(
        conf["plugins"][2],
        serde_json::json!({"type": "bandwidth", "capabilities": {"bandwidth": true}})
    );
    assert_eq!(conf["plugins"].as_array().map(Vec::len), Some(3));
}
