//! Issue 8, scenario 2: `flannel-external-ip` with `node-external-ip` on a second segment.
//!
//! The nodes sit on segment 0 (`192.0.2.0/24`) with their node IPs. Their external IPs are on
//! segment 1 (`198.51.100.0/24`), behind a router that owns them and translates each one to its
//! node (one-to-one NAT, as a cloud's elastic IPs do); the nodes' default route is that router.
//! The router also hairpins (a node's traffic to an external IP is masqueraded to the router),
//! as cloud NATs do; weft needs that today, because a server's embedded agent dials the
//! server's advertise address, which defaults to its external IP, rather than the server
//! locally as K3s's does. Each node drops vxlan packets (UDP 8472) sent straight to another
//! node's internal address, so pods can only reach each other if the fabric sends to the
//! external addresses, through the router. Checked: each agent's FDB entry for the peer has
//! the peer's external IP as `dst`, and pods on the two nodes ping each other and move data
//! over TCP.

use anyhow::ensure;

use crate::e2e::cluster::{self, Node, Settings, row};
use crate::e2e::cni::Pod;
use crate::e2e::lab::{Families, Lab};
use crate::e2e::probe::{ping, transfer};

use super::fabric::check_path_to;

/// The vxlan port.
const VXLAN_PORT: &str = "8472";

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::V4;
    let internal = lab.segment(0, families)?;
    let external = lab.segment(1, families)?;
    let router = lab.host("rt", &[(&internal, 254), (&external, 254)])?;
    router.ns.sysctl("net.ipv4.ip_forward", "1")?;
    for key in ["all", "default", "eth0"] {
        router
            .ns
            .sysctl(&format!("net.ipv4.conf.{key}.send_redirects"), "0")?;
    }
    let mut settings = Settings::new("vxlan", families);
    settings.extra.push("--flannel-external-ip".to_owned());

    // One-to-one NAT for each node's external IP, with hairpinning (a node that reaches an
    // external IP is masqueraded to the router, as cloud NATs do), so a server also reaches
    // its own advertised address.
    let mut nat = String::new();
    for n in [1u8, 2] {
        let (inside, outside) = (internal.v4(n), external.v4(n));
        router
            .ns
            .ip(&["addr", "add", &format!("{outside}/24"), "dev", "eth1"])?;
        nat += &format!("ip daddr {outside} dnat to {inside}; ");
    }
    router.ns.run(
        "nft",
        &[&format!(
            "add table ip e2e {{ \
             chain pre {{ type nat hook prerouting priority dstnat; {nat}}}; \
             chain post {{ type nat hook postrouting priority srcnat; \
             ip saddr 192.0.2.0/24 ct status dnat oifname eth0 masquerade; }}; }}"
        )],
    )?;

    let mut nodes: Vec<Node> = Vec::new();
    for n in [1u8, 2] {
        let name = format!("n{n}");
        let host = lab.host(&name, &[(&internal, n)])?;
        host.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &internal.v4(254).to_string(),
        ])?;
        // Vxlan straight to another node's internal address goes nowhere.
        host.ns.run(
            "nft",
            &[&format!(
                "add table ip e2e {{ chain out {{ type filter hook output priority 0; \
                 ip daddr 192.0.2.0/24 udp dport {VXLAN_PORT} drop; }}; }}"
            )],
        )?;
        let external_ip = external.v4(n).to_string();
        let external_flag = ["--node-external-ip", external_ip.as_str()];
        let mut node = match nodes.first() {
            None => Node::server(lab, &name, host, &settings, &external_flag),
            Some(server) => Node::agent(lab, &name, host, &server.url(), &server.token()?)
                .with_args(&external_flag),
        };
        node.start(lab)?;
        nodes.push(node);
    }
    lab.step("n1, n2 behind a router that maps 198.51.100.1, .2 to them; direct vxlan dropped");

    let refs: Vec<&Node> = nodes.iter().collect();
    let rows = cluster::wait_converged(lab, &nodes[0], &refs)?;
    check_path_to(
        "vxlan",
        &nodes[0],
        row(&rows, "n2")?,
        false,
        external.v4(2).into(),
    )?;
    check_path_to(
        "vxlan",
        &nodes[1],
        row(&rows, "n1")?,
        false,
        external.v4(1).into(),
    )?;
    lab.step("each FDB entry's dst is the peer's external IP");

    let p1 = Pod::add(lab, &nodes[0], "p1")?;
    let p2 = Pod::add(lab, &nodes[1], "p2")?;
    let (a, b) = (p1.ip(false)?, p2.ip(false)?);
    ping(&p1.ns, b, 3)?;
    ping(&p2.ns, a, 3)?;
    let seen = transfer(lab, &p1.ns, &p2.ns, b)?.peer;
    ensure!(seen == a, "p2 saw p1's transfer come from {seen}, not {a}");
    lab.step(format!(
        "p1 {a} <-> p2 {b}: ping and TCP through the external addresses"
    ));
    p1.delete()?;
    p2.delete()?;
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}
