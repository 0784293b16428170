//! Issue 8, scenario 3: `flannel-backend: none`.
//!
//! A server and an agent register and get leases, but neither programs anything (no `flannel*`
//! or `cni0` link, no route of weft's, no `weft` nftables table) and neither writes a CNI
//! config or `subnet.env`: with `none`, the pod network is someone else's. The egress tunnel
//! still works: the server's front door reaches the agent's kubelet through it.

use std::time::Duration;

use anyhow::ensure;

use crate::e2e::cluster::{self, Settings};
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Lab};

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::Dual;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("none", families);
    // A short reconcile interval, so a reconcile that would program something has happened
    // before the checks.
    let (mut nodes, rows) =
        cluster::start(lab, &segment, &settings, 1, &["--reconcile-interval", "1"])?;
    for row in &rows {
        ensure!(
            row.ipv4_cidr.is_some() && row.ipv6_cidr.is_some(),
            "{} has no lease of each family: {row:?}",
            row.name
        );
    }
    lab.step("both nodes registered and got a lease of each family");
    std::thread::sleep(Duration::from_secs(2));
    for node in &mut nodes {
        node.daemon()?.check_running()?;
        let objects = inspect::weft_objects(&node.host.ns)?;
        ensure!(
            objects.is_empty(),
            "{} programmed {objects:?} with backend none",
            node.name
        );
        for file in [node.conflist(), node.subnet_file()] {
            ensure!(
                !file.exists(),
                "{} wrote {} with backend none",
                node.name,
                file.display()
            );
        }
    }
    lab.step("no link, route or nftables table of weft's, no CNI config, no subnet.env");
    let mut kubelet = None;
    super::egress::kubelet_through_tunnel(lab, &nodes[0], &nodes[1], &mut kubelet)?;
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}
