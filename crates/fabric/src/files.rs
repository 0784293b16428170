//! The files an agent writes for the rest of the node: flannel's `subnet.env` and a CNI
//! conflist that the reference CNI plugins (bridge, host-local, portmap, bandwidth) run
//! unmodified.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::json;
use weft_ipam::{Cidr, CidrList, Family};

use crate::Lease;

#[cfg(test)]
mod tests;

/// The pods' bridge, which is also their gateway.
pub const CNI_BRIDGE: &str = "cni0";
/// The CNI network name.
pub const CNI_NETWORK: &str = "weft";
/// The conflist's file name in the CNI config directory.
pub const CNI_CONFLIST_NAME: &str = "10-weft.conflist";

/// `subnet.env` in flannel's format: the cluster network and this node's pod CIDR (as its
/// first address, `.1`) of each family, the pod MTU and `FLANNEL_IPMASQ=true`.
pub fn subnet_env(cluster: &CidrList, local: &Lease, mtu: u32) -> String {
    let mut out = String::new();
    if let (Some(net), Some(pod)) = (cluster.get(Family::Ipv4), local.ipv4_cidr) {
        let _ = writeln!(out, "FLANNEL_NETWORK={net}");
        let _ = writeln!(out, "FLANNEL_SUBNET={}", first_host(Cidr::V4(pod)));
    }
    if let (Some(net), Some(pod)) = (cluster.get(Family::Ipv6), local.ipv6_cidr) {
        let _ = writeln!(out, "FLANNEL_IPV6_NETWORK={net}");
        let _ = writeln!(out, "FLANNEL_IPV6_SUBNET={}", first_host(Cidr::V6(pod)));
    }
    let _ = writeln!(out, "FLANNEL_MTU={mtu}");
    let _ = writeln!(out, "FLANNEL_IPMASQ=true");
    out
}

/// The CNI conflist (`cniVersion` 1.0.0): a `bridge` on `cni0` as the pods' default gateway
/// with `host-local` IPAM over this node's pod CIDR(s), one range per family, then `portmap`
/// (the pods' host ports) and `bandwidth` (the pods' `kubernetes.io/ingress-bandwidth` and
/// `egress-bandwidth` annotations, which the container runtime passes as the `bandwidth`
/// capability), chained as K3s chains them.
///
/// `ipam_data_dir` is where host-local keeps its reservations; it is per agent so several
/// agents can share one host (each in its own network namespace).
pub fn cni_conflist(local: &Lease, mtu: u32, ipam_data_dir: &str) -> String {
    let ranges: Vec<_> = local
        .ipv4_cidr
        .map(Cidr::V4)
        .into_iter()
        .chain(local.ipv6_cidr.map(Cidr::V6))
        .map(|cidr| json!([{ "subnet": cidr.to_string(), "gateway": first_ip(cidr).to_string() }]))
        .collect();
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": ranges,
                    "dataDir": ipam_data_dir,
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true
            },
            {
                "type": "bandwidth",
                "capabilities": { "bandwidth": true }
            }
        ]
    });
    let mut text = serde_json::to_string_pretty(&conf).unwrap_or_default();
    text.push('\n');
    text
}

/// The first usable address of a pod CIDR (the bridge's address), with the CIDR's prefix.
fn first_host(cidr: Cidr) -> String {
    format!("{}/{}", first_ip(cidr), cidr.prefix_len())
}

fn first_ip(cidr: Cidr) -> IpAddr {
    // A pod CIDR always holds more than one address (node masks stop at /32 and /128 only for
    // pathological configs); fall back to the network address there.
    weft_ipam::indexed_ip(cidr, 1).unwrap_or(cidr.network())
}
