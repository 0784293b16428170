//! Issue 8, scenario 9: switching the backend needs restarts, not reboots.
//!
//! A dual-stack cluster (server `n1`, agent `n2`) with a pod on each node goes vxlan →
//! wireguard-native → vxlan as K3s's migration says: the server restarts with the new
//! `flannel-backend`, then the agent restarts. After each step the old backend's devices are
//! gone, the new backend's are there, and the pods reach each other over both families.

use std::time::Duration;

use crate::e2e::cluster::{self, Node, Settings};
use crate::e2e::cni::Pod;
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Lab, wait_for};
use crate::e2e::probe;

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::Dual;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("vxlan", families);
    let (mut nodes, _) = cluster::start(lab, &segment, &settings, 1, &[])?;
    let p1 = Pod::add(lab, &nodes[0], "p1")?;
    let p2 = Pod::add(lab, &nodes[1], "p2")?;
    check(lab, &nodes, &p1, &p2, "vxlan")?;

    for backend in ["wireguard-native", "vxlan"] {
        nodes[0].stop()?;
        nodes[0].set_arg("--flannel-backend", backend);
        nodes[0].start(lab)?;
        lab.step(format!(
            "server n1 restarted with flannel-backend {backend}"
        ));
        nodes[1].stop()?;
        nodes[1].start(lab)?;
        lab.step("agent n2 restarted");
        check(lab, &nodes, &p1, &p2, backend)?;
    }
    p1.delete()?;
    p2.delete()?;
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}

/// How long a restarted agent may take to converge (its first reconcile, WireGuard handshakes).
const CONVERGE: Duration = Duration::from_secs(15);

/// Each node comes to have exactly `backend`'s devices, and the pods reach each other both ways
/// over both families.
fn check(lab: &Lab<'_>, nodes: &[Node], p1: &Pod, p2: &Pod, backend: &str) -> anyhow::Result<()> {
    let (want, gone) = match backend {
        "vxlan" => (
            [inspect::vxlan_dev(false), inspect::vxlan_dev(true)],
            [inspect::wireguard_dev(false), inspect::wireguard_dev(true)],
        ),
        _ => (
            [inspect::wireguard_dev(false), inspect::wireguard_dev(true)],
            [inspect::vxlan_dev(false), inspect::vxlan_dev(true)],
        ),
    };
    // `start` returns once the agent registered; its first reconcile may still be running.
    for node in nodes {
        let what = format!("{} to have only {backend}'s devices", node.name);
        wait_for(&what, CONVERGE, || {
            let objects = inspect::weft_objects(&node.host.ns)?;
            let has = |dev: &str| objects.contains(&format!("link {dev}"));
            Ok((want.iter().all(|d| has(d)) && !gone.iter().any(|d| has(d))).then_some(()))
        })?;
    }
    for v6 in [false, true] {
        for (from, to) in [(p1, p2), (p2, p1)] {
            let to_ip = to.ip(v6)?;
            wait_for(&format!("{} to reach {to_ip}", from.ns), CONVERGE, || {
                Ok(probe::reachable(&from.ns, to_ip).then_some(()))
            })?;
            probe::ping(&from.ns, to_ip, 3)?;
        }
    }
    lab.step(format!(
        "{backend}: only {backend}'s devices on both nodes; the pods reach each other over IPv4 and IPv6"
    ));
    Ok(())
}
