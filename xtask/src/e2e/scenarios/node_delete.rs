//! Issue 8, scenario 6: `weft-server node delete`.
//!
//! A vxlan dual-stack cluster of three nodes. Node `n3` is taken out of service (its agent
//! stopped, as before decommissioning a machine; a running agent would register again, as a
//! kubelet does) and deleted with `weft-server node delete n3`. Within 5 seconds every other
//! node has no route to n3's pod CIDRs, no neighbour entry for its VTEP addresses and no FDB
//! entry towards its node IPs, `node list` no longer shows it, and pods on the remaining nodes
//! still reach each other.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::ensure;

use crate::e2e::cluster::{self, Node, NodeRow, Settings, row};
use crate::e2e::cni::Pod;
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Lab, wait_for};
use crate::e2e::probe::ping;

/// How soon the other nodes must have forgotten the deleted one.
const DEADLINE: Duration = Duration::from_secs(5);

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::Dual;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("vxlan", families);
    let (mut nodes, rows) = cluster::start(lab, &segment, &settings, 2, &[])?;
    let gone = row(&rows, "n3")?.clone();
    for node in &nodes[..2] {
        ensure!(
            !leftovers(node, &gone)?.is_empty(),
            "{} has nothing for n3 before the delete",
            node.name
        );
    }
    nodes[2].stop()?;
    lab.step("n3's agent stopped");

    let out = nodes[0].server_command(lab, &["node", "delete", "n3"], &[])?;
    let deleted = Instant::now();
    lab.step(format!("weft-server node delete n3: {}", out.trim()));
    for node in &nodes[..2] {
        wait_for(
            &format!("{} to forget n3", node.name),
            DEADLINE.saturating_sub(deleted.elapsed()),
            || {
                let left = leftovers(node, &gone)?;
                if left.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(anyhow::anyhow!("still there: {left:?}"))
                }
            },
        )?;
    }
    lab.step(format!(
        "n1 and n2 dropped n3's routes, neighbours and FDB entries within {:.1}s",
        deleted.elapsed().as_secs_f64()
    ));
    let listed = nodes[0].node_list(lab)?;
    ensure!(
        listed.iter().all(|r| r.name != "n3"),
        "`node list` still shows n3: {listed:?}"
    );

    let p1 = Pod::add(lab, &nodes[0], "p1")?;
    let p2 = Pod::add(lab, &nodes[1], "p2")?;
    for v6 in families.each() {
        ping(&p1.ns, p2.ip(v6)?, 2)?;
    }
    lab.step("p1 on n1 still reaches p2 on n2");
    p1.delete()?;
    p2.delete()?;
    for node in nodes[..2].iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}

/// What `node` still holds for `gone`: routes to its CIDRs, neighbours for its VTEP
/// addresses, FDB entries towards its node IPs.
fn leftovers(node: &Node, gone: &NodeRow) -> anyhow::Result<Vec<String>> {
    let ns = &node.host.ns;
    let mut left = Vec::new();
    for (v6, cidr) in [(false, &gone.ipv4_cidr), (true, &gone.ipv6_cidr)] {
        let Some(cidr) = cidr else { continue };
        let route = inspect::route(ns, cidr)?;
        if !route.is_empty() {
            left.push(format!("route {route}"));
        }
        let dev = inspect::vxlan_dev(v6);
        let vtep: Option<IpAddr> = cidr.split('/').next().and_then(|ip| ip.parse().ok());
        if let Some(vtep) = vtep
            && inspect::permanent_neighbours(ns, v6, dev)?.contains(&vtep)
        {
            left.push(format!("neighbour {vtep} on {dev}"));
        }
        for dst in inspect::fdb_dsts(ns, dev)? {
            if gone.node_ips.contains(&dst) {
                left.push(format!("FDB entry on {dev} to {dst}"));
            }
        }
    }
    Ok(left)
}
